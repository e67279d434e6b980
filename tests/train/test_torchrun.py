"""Training under torchrun (gloo on CPU): data-parallel ranks train what one process trains, and a run saved on
N ranks resumes on M."""

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import tiny_run_config

from lmforge.checkpoint import load_checkpoint
from lmforge.config import ParallelConfig, to_dict
from lmforge.errors import ConfigError
from lmforge.train.distributed import first_difference
from lmforge.train.metrics import read_metrics
from lmforge.train.trainer import train

STEPS = 4


def write_toml(cfg, path):
    """A run config as TOML (JSON scalars and arrays are TOML values)."""
    lines = []
    for section, values in to_dict(cfg).items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items() if value is not None]
    path.write_text("\n".join(lines) + "\n")
    return path


def torchrun(ranks, config, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}", "-m", "lmforge",
           "train", str(config), "--no-progress", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def run_config(corpus_dir, prepared, out, **train_args):
    return tiny_run_config(corpus_dir, out, prepared.dir, steps=STEPS, batch_size=4, grad_accum=2, eval_every=2,
                           optimizer="namo", **train_args)


def losses(out, key="loss"):
    return [r[key] for r in read_metrics(out / "metrics.jsonl") if key in r]


def assert_same_run(a, b):
    assert losses(a) == pytest.approx(losses(b), rel=1e-5)
    assert losses(a, "val_loss") == pytest.approx(losses(b, "val_loss"), rel=1e-5)
    wa, wb = load_checkpoint(a).model.state_dict(), load_checkpoint(b).model.state_dict()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


@pytest.fixture(scope="module")
def one_process(corpus_dir, prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "run"
    train(run_config(corpus_dir, prepared, out), progress=False, log=lambda s: None)
    return out


def test_data_and_context_parallel_ranks_train_what_one_process_trains(one_process, corpus_dir, prepared, tmp_path):
    out = tmp_path / "ranks"
    done = torchrun(4, write_toml(run_config(corpus_dir, prepared, out), tmp_path / "run.toml"), "parallel.cp=2")
    assert "2 data-parallel x 2 context-parallel ranks" in done.stdout + done.stderr
    assert_same_run(out, one_process)
    assert len(losses(out)) == STEPS  # rank 0 alone writes the metrics


def test_sharded_upipe_ranks_train_what_one_process_trains_and_resume_across_world_sizes(one_process, corpus_dir,
                                                                                          prepared, tmp_path):
    out = tmp_path / "fsdp"
    cfg = run_config(corpus_dir, prepared, out)
    config = write_toml(cfg, tmp_path / "run.toml")
    upipe = ("parallel.cp=2", "parallel.cp_attention=upipe")
    # NAMO on each rank's rows under FSDP, UPipe across the two ranks, a checkpoint gathered whole
    done = torchrun(2, config, *upipe, "parallel.fsdp=true", "--until-step", "2")
    assert "parameters sharded (FSDP)" in done.stdout + done.stderr
    assert train(cfg, resume=True, until_step=3, progress=False, log=lambda s: None).step == 3  # N ranks -> one
    torchrun(2, config, "parallel.fsdp=true", "--resume")  # one -> N: each rank keeps its rows of the state
    assert_same_run(out, one_process)


def test_a_time_budget_stops_every_rank_at_the_same_step(corpus_dir, prepared, tmp_path):
    out = tmp_path / "budget"
    cfg = tiny_run_config(corpus_dir, out, prepared.dir, steps=100000, time_budget=3.0, eval_every=0, optimizer="namo")
    torchrun(2, write_toml(cfg, tmp_path / "run.toml"))  # ranks disagreeing on the last step would hang here
    state = json.loads((out / "checkpoint" / "trainer.json").read_text())
    assert 1 <= state["step"] < 100000 and state["train_seconds"] >= 3.0 and "final_eval" in state


def test_the_layout_must_fit_the_launch():
    assert ParallelConfig().resolve(4).dp == 4 and ParallelConfig(dp=2).resolve(2).dp == 2
    assert ParallelConfig(cp=2).resolve(4) == ParallelConfig(2, 2)
    with pytest.raises(ConfigError, match="parallel.dp=2 x parallel.cp=1 is 2 ranks but torchrun started 4"):
        ParallelConfig(dp=2).resolve(4)
    with pytest.raises(ConfigError, match="torchrun --nproc-per-node 2"):
        ParallelConfig(cp=2).resolve(1)


def test_the_first_differing_key_is_named():
    a = {"model": {"d_model": 32, "mixers": ["softmax"]}, "train": {"lr": 1e-3}}
    assert first_difference(a, json.loads(json.dumps(a))) is None
    assert first_difference(a, {**a, "train": {"lr": 2e-3}}) == "train.lr"
    assert first_difference(a, {"model": {"d_model": 32}, "train": {"lr": 1e-3}}) == "model.mixers"
