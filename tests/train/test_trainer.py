import json
import signal
import threading

import pytest
import torch
from helpers import tiny_run_config

from lmforge.checkpoint import load_checkpoint
from lmforge.errors import CheckpointError, ConfigError
from lmforge.train.metrics import read_metrics
from lmforge.train.trainer import train


def losses(out):
    return [r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]


@pytest.mark.parametrize("optimizer, mixers", [("adamw", ["softmax"]), ("namo", ["softmax"]), ("muon", ["2mamba", "softmax"])])
def test_resume_is_exact(tmp_path, corpus_dir, prepared, optimizer, mixers):
    cfg = tiny_run_config(corpus_dir, tmp_path / "full", prepared.dir, steps=8, grad_accum=2, optimizer=optimizer)
    cfg.model.mixers = mixers
    full = train(cfg, progress=False, log=lambda s: None)
    assert full.step == 8 and full.final_eval is not None

    cfg2 = tiny_run_config(corpus_dir, tmp_path / "split", prepared.dir, steps=8, grad_accum=2, optimizer=optimizer)
    cfg2.model.mixers = mixers
    half = train(cfg2, until_step=4, progress=False, log=lambda s: None)
    assert half.step == 4 and half.final_eval is None
    rest = train(cfg2, resume=True, progress=False, log=lambda s: None)
    assert rest.step == 8
    assert losses(tmp_path / "split") == losses(tmp_path / "full")
    assert rest.final_eval == full.final_eval
    a = load_checkpoint(tmp_path / "full").model.state_dict()
    b = load_checkpoint(tmp_path / "split").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_outputs_and_learning(tmp_path, corpus_dir, prepared):
    cfg = tiny_run_config(corpus_dir, tmp_path / "run", prepared.dir, steps=30, lr=1e-2, eval_every=10)
    result = train(cfg, progress=False, log=lambda s: None)
    out = tmp_path / "run"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "optimizer.pt", "trainer.json"):
        assert (out / "checkpoint" / name).is_file()
    assert (out / "loss.png").stat().st_size > 1000
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 31))
    assert {r["step"] for r in records if "val_loss" in r} == {10, 20, 30}
    assert all(r["tokens_per_second"] > 0 and 0 < r["mfu"] for r in records if "loss" in r)
    first, last = losses(out)[0], losses(out)[-1]
    assert last < first - 1.0
    trainer_state = json.loads((out / "checkpoint" / "trainer.json").read_text())
    assert trainer_state["step"] == 30 and trainer_state["final_eval"]["bpb"] == result.final_eval["bpb"]
    hf = json.loads((out / "checkpoint" / "config.json").read_text())
    assert hf["model_type"] == "llama" and hf["num_key_value_heads"] == 2 and hf["vocab_size"] == 300


def test_same_seed_same_run(tmp_path, corpus_dir, prepared):
    runs = [train(tiny_run_config(corpus_dir, tmp_path / n, prepared.dir, seed=s), progress=False, log=lambda s: None)
            for n, s in (("a", 1), ("b", 1), ("c", 2))]
    a, b, c = (losses(tmp_path / n) for n in "abc")
    assert a == b and a != c and runs[0].final_eval == runs[1].final_eval


def test_refuses_to_clobber_or_resume_the_wrong_run(tmp_path, corpus_dir, prepared):
    cfg = tiny_run_config(corpus_dir, tmp_path / "r", prepared.dir, steps=2)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(cfg, resume=True, progress=False, log=lambda s: None)
    train(cfg, progress=False, log=lambda s: None)
    with pytest.raises(CheckpointError, match="--resume"):
        train(cfg, progress=False, log=lambda s: None)
    wider = tiny_run_config(corpus_dir, tmp_path / "r", prepared.dir, steps=2)
    wider.model.d_model = 64
    with pytest.raises(CheckpointError, match="model.d_model"):
        train(wider, resume=True, progress=False, log=lambda s: None)
    with pytest.raises(ConfigError, match="exceeds model.max_seq_len"):
        train(tiny_run_config(corpus_dir, tmp_path / "s", prepared.dir, seq_len=128), progress=False, log=lambda s: None)


def test_refuses_to_resume_with_another_optimizer(tmp_path, corpus_dir, prepared):
    train(tiny_run_config(corpus_dir, tmp_path / "r", prepared.dir, steps=4, optimizer="muon"), until_step=2,
          progress=False, log=lambda s: None)
    other = tiny_run_config(corpus_dir, tmp_path / "r", prepared.dir, steps=4, optimizer="namo")
    with pytest.raises(CheckpointError, match=r"matrix \(muon, 14 tensors\).*matrix \(namo, 14 tensors\).*--overwrite"):
        train(other, resume=True, progress=False, log=lambda s: None)


def test_ctrl_c_saves_a_resumable_checkpoint(tmp_path, corpus_dir, prepared):
    cfg = tiny_run_config(corpus_dir, tmp_path / "i", prepared.dir, steps=100000, eval_every=0)
    logs = []

    def interrupt_when_running(msg):
        logs.append(msg)
        if msg.startswith("model "):
            threading.Timer(0.5, signal.raise_signal, (signal.SIGINT,)).start()

    result = train(cfg, progress=False, log=interrupt_when_running)
    assert result.interrupted and 0 < result.step < 100000
    ckpt = json.loads((tmp_path / "i" / "checkpoint" / "trainer.json").read_text())
    assert ckpt["step"] == result.step
    assert any("--resume" in m for m in logs)


def test_time_budget_stops_on_time_with_the_schedule_annealed(tmp_path, corpus_dir, prepared):
    cfg = tiny_run_config(corpus_dir, tmp_path / "t", prepared.dir, steps=100000, time_budget=2.0, eval_every=0,
                          warmup_steps=0, min_lr_ratio=0.0)
    result = train(cfg, progress=False, log=lambda s: None)
    assert not result.interrupted and result.train_seconds >= 2.0 and 2 <= result.step < 100000
    assert result.final_eval is not None  # a spent budget finishes the run
    lrs = [r["lr"] for r in read_metrics(tmp_path / "t" / "metrics.jsonl") if "lr" in r]
    assert lrs[0] > 0 and lrs[-1] == 0.0  # decayed to the floor on time, far from the step cap
    with pytest.raises(CheckpointError, match=r"already finished its 2 s of training"):
        train(cfg, resume=True, progress=False, log=lambda s: None)
