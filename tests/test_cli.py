"""End-to-end runs of the `lmforge` command and its one-line errors on bad input."""

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import write_corpus

from lmforge.cli import build_parser, main

TINY = [
    "model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.max_seq_len=64",
    "data.vocab_size=300", "data.val_bytes=8000",
    "train.seq_len=32", "train.batch_size=4", "train.steps=6", "train.warmup_steps=2", "train.eval_every=3",
    "train.eval_tokens=256", "train.log_every=2", "train.compile=false", "train.precision=fp32",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained end to end through the CLI (prepare, then train)."""
    root = tmp_path_factory.mktemp("cli")
    write_corpus(root / "corpus", n_docs=30, seed=1)
    common = [f"data.corpus={root / 'corpus'}", f"data.dir={root / 'data'}", *TINY]
    assert main(["prepare", *common, "--no-progress"]) == 0
    assert main(["train", "quickstart", f"train.out={root / 'run'}", *common, "--no-progress"]) == 0
    return root


def run_cli(*args):
    proc = subprocess.run([sys.executable, "-m", "lmforge.cli", *map(str, args)], capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def assert_one_line_errors(cases):
    """Each (args, message): the command exits 2 with `message` on one line of stderr and no traceback."""
    with ThreadPoolExecutor(3) as pool:  # each call is a fresh interpreter: run a few at once
        results = list(pool.map(lambda case: run_cli(*case[0]), cases))
    for (args, message), (code, _, err) in zip(cases, results):
        assert code == 2, (args, err)
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_train_and_generate(trained, capsys):
    assert (trained / "run" / "checkpoint" / "model.safetensors").is_file()
    manifest = json.loads((trained / "data" / "manifest.json").read_text())
    assert manifest["splits"]["val"]["tokens"] > 0
    capsys.readouterr()
    assert main(["generate", str(trained / "run"), "--prompt", "alpha beta", "--max-new-tokens", "12", "--temperature", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("alpha beta") and len(out) > len("alpha beta")
    assert main(["generate", str(trained / "run"), "--prompt-ids", "5,6,7", "--max-new-tokens", "4", "--seed", "3"]) == 0
    capsys.readouterr()
    ids = ",".join(["5"] * 60)  # the context is 64: generation stops after 4 tokens, and says why
    assert main(["generate", str(trained / "run"), "--prompt-ids", ids, "--max-new-tokens", "100", "--temperature", "0"]) == 0
    assert "context of 64 tokens is full" in capsys.readouterr().err


def test_bad_inputs_give_one_line_errors(trained, tmp_path):
    ckpt = trained / "run"
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.toml").write_text("[train]\nstepz = 3\n")
    cases = [
        (["prepare", f"data.corpus={tmp_path / 'missing'}", f"data.dir={tmp_path / 'd1'}"], "matches no files"),
        (["prepare", f"data.corpus={tmp_path / 'empty'}", f"data.dir={tmp_path / 'd1'}"], "matches no files"),
        (["train", tmp_path / "bad.toml"], "unknown config key 'train.stepz'"),
        (["train", "quickstart", "train.steps=many"], "train.steps: expected int"),
        (["generate", ckpt, "--prompt-ids", "1,299999"], "outside the vocabulary"),
        (["generate", ckpt, "--prompt", "alpha " * 200], "context is 64"),
        (["generate", tmp_path / "nothing"], "neither a file, a directory nor a pullable model"),
    ]
    assert_one_line_errors(cases)
    assert not (tmp_path / "d1").exists()


def test_damaged_checkpoints(trained, tmp_path):
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(trained / "run" / "checkpoint", ckpt)
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-200])
    code, _, err = run_cli("generate", ckpt, "--prompt", "x")
    assert code == 2 and "truncated or corrupt" in err and "Traceback" not in err
    shutil.copy(trained / "run" / "checkpoint" / "model.safetensors", weights)
    from lmforge.tokenizer import Tokenizer

    Tokenizer.train(["other words here"] * 4, vocab_size=290).save(ckpt)
    code, _, err = run_cli("generate", ckpt, "--prompt", "x")
    assert code == 2 and "another checkpoint" in err


def subcommands(parser, prefix=()):
    """Every command path of a parser, e.g. ("data", "run"), from its subparsers."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield (*prefix, name)
                yield from subcommands(child, (*prefix, name))


def help_text(capsys, *args):
    with pytest.raises(SystemExit) as stop:
        main([*args, "--help"])
    out, err = capsys.readouterr()
    return stop.value.code, out, err


def test_help_lists_every_command_and_each_command_explains_itself(capsys):
    commands = list(subcommands(build_parser()))
    assert len(commands) >= 14
    code, out, _ = help_text(capsys)
    assert code == 0
    assert all(path[0] in out for path in commands)
    for path in commands:
        code, out, err = help_text(capsys, *path)
        usage, _, rest = out.partition("\n\n")
        description = rest.split("\n\n")[0]
        assert code == 0 and err == "" and usage.startswith(f"usage: lmforge {' '.join(path)}"), path
        assert not description.startswith(("positional arguments", "options")) and len(description) > 15, path


def test_quickstart_end_to_end_on_a_tiny_budget(tmp_path):
    """The quickstart command itself, shrunk: prepares stdlib, trains, reports against gzip and xz, samples."""
    overrides = [o for o in TINY if not o.startswith(("train.steps", "data.val_bytes"))]
    overrides += ["train.steps=4", "data.tokenizer_sample_bytes=300000"]
    code, out, err = run_cli("quickstart", "--out", tmp_path / "qs", "--no-progress", *overrides)
    assert code == 0, err
    report = json.loads((tmp_path / "qs" / "report.json").read_text())
    for key in ("val_bpb", "gzip_bpb", "xz_bpb", "wall_seconds", "tokens_per_second", "params"):
        assert report[key] > 0
    assert report["xz_bpb"] < report["gzip_bpb"] < 3 and report["steps"] == 4
    assert report["val_bytes"] >= 250_000
    assert "validation bits/byte" in out and "gzip -9" in out and report["sample"].startswith("def read_config")


def test_export_and_run_the_exports(trained, tmp_path, capsys):
    run = trained / "run"
    assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    assert main(["export", str(run), "--format", "gguf", "--dtype", "f32", "--out", str(tmp_path / "m.gguf")]) == 0
    outputs = []
    for model in (run, tmp_path / "hf", tmp_path / "m.gguf"):
        capsys.readouterr()
        assert main(["generate", str(model), "--prompt", "alpha", "--max-new-tokens", "10", "--temperature", "0"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] == outputs[2]  # the same model in three formats


def test_eval_perplexity_command(trained, capsys):
    corpus = trained / "corpus"
    assert main(["eval", "perplexity", str(trained / "run"), "--data", str(corpus), "--seq-len", "32", "--max-tokens", "500"]) == 0
    out = capsys.readouterr().out
    assert "perplexity" in out and "bits/byte" in out and "500 tokens" in out


def test_model_errors_are_one_line(trained, tmp_path):
    (tmp_path / "nothing-here").mkdir()
    cases = [
        (["generate", "no-such-model", "--prompt", "x"], "neither a file, a directory nor a pullable model"),
        (["generate", tmp_path / "nothing-here"], "has no config.json"),
        (["generate", trained / "run", "--chat", "hi"], "no chat template"),
        (["pull", "gpt-17"], "unknown model 'gpt-17'"),
    ]
    assert_one_line_errors(cases)


def test_hybrid_linear_model_with_namo_trains_resumes_and_generates(trained, tmp_path, capsys):
    common = [f"data.corpus={trained / 'corpus'}", f"data.dir={trained / 'data'}", *TINY,
              "model.mixers=[2mamba,mamba2s,softmax]", "model.n_layers=3", "optimizer=namo", f"train.out={tmp_path / 'run'}"]
    assert main(["train", "quickstart", *common, "--until-step", "3", "--no-progress"]) == 0
    assert main(["train", "quickstart", *common, "--resume", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "run"), "--prompt", "alpha", "--max-new-tokens", "8", "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith("alpha")


def test_distill_into_sparse_attention_and_generate(trained, tmp_path, capsys):
    args = ["distill", str(trained / "run"), "--out", str(tmp_path / "sparse"), "--layers", "0", "--no-progress",
            "train.steps=3", "model.sparse_block_q=8", "model.sparse_block_k=8", "model.sparse_top_k=0.2"]
    assert main(args) == 0
    assert "distilled into" in capsys.readouterr().out
    assert main(["generate", str(tmp_path / "sparse"), "--prompt", "alpha", "--max-new-tokens", "6", "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith("alpha")
    code, _, err = run_cli("distill", trained / "run", "--out", tmp_path / "bad", "--layers", "9")
    assert code == 2 and "layer 9 does not exist" in err


def test_quantize_with_awq_records_its_search_size(trained, tmp_path, capsys):
    q = tmp_path / "awq"
    assert main(["quantize", str(trained / "run"), "--method", "awq", "--group-size", "32", "--awq-search-seqs", "2",
                 "--calib", str(trained / "corpus"), "--calib-seqs", "4", "--calib-len", "32", "--out", str(q),
                 "--no-progress"]) == 0
    assert "awq int4 g32" in capsys.readouterr().out
    made = json.loads((q / "config.json").read_text())["quantization"]
    assert made["method"] == "awq" and made["awq_search_seqs"] == 2 and made["calibration"]["sequences"] == 4


def test_quantize_generate_evaluate_and_export(trained, tmp_path, capsys):
    run, q = trained / "run", tmp_path / "q4"
    assert main(["quantize", str(run), "--method", "gptq", "--group-size", "32", "--calib", str(trained / "corpus"),
                 "--calib-seqs", "4", "--calib-len", "32", "--out", str(q), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "gptq int4 g32" in out and "MB float" in out
    assert main(["generate", str(q), "--prompt", "alpha", "--max-new-tokens", "8", "--temperature", "0"]) == 0
    quantized = capsys.readouterr().out
    assert quantized.startswith("alpha") and len(quantized) > len("alpha\n")
    assert main(["eval", "perplexity", str(q), "--data", str(trained / "corpus"), "--seq-len", "32", "--max-tokens", "300"]) == 0
    assert "perplexity" in capsys.readouterr().out
    assert main(["export", str(q), "--format", "gguf", "--out", str(tmp_path / "q4.gguf")]) == 0
    assert main(["generate", str(tmp_path / "q4.gguf"), "--prompt", "alpha", "--max-new-tokens", "8", "--temperature", "0"]) == 0
    cases = [
        (["quantize", q, "--method", "rtn", "--out", tmp_path / "again"], "already quantized"),
        (["quantize", run, "--group-size", "12", "--out", tmp_path / "again"], "multiple of 8"),
        (["quantize", run, "--calib", tmp_path / "no-such-corpus", "--out", tmp_path / "again"], "matches no files"),
    ]
    with ThreadPoolExecutor(3) as pool:  # each call is a fresh interpreter: run a few at once
        results = list(pool.map(lambda case: run_cli(*case[0]), cases))
    for (args, message), (code, out, err) in zip(cases, results):
        assert code == 2, (args, err)
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "again").exists()


def test_reasoning_effort_commands(trained, tmp_path, capsys):
    run, out = trained / "run", tmp_path / "dtr.jsonl"
    common = ["--task", "arithmetic", "--limit", "3", "--max-new-tokens", "8", "--no-progress"]
    assert main(["eval", "dtr", str(run), *common, "-n", "2", "--out", str(out)]) == 0
    assert "mean DTR" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and all(0 <= r["dtr"] <= 1 and r["tokens"] == 8 for r in rows)
    assert all(isinstance(r["correct"], bool) for r in rows)
    assert main(["eval", "think-at-n", str(run), *common, "-n", "4", "--prefix", "3", "--rules", "dtr,all"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in table[1:]] == ["dtr", "all"]
    assert float(table[1].split()[2]) == pytest.approx(2 * 8 + 2 * 3)  # two samples stopped after the prefix
    assert float(table[2].split()[2]) == pytest.approx(4 * 8)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "alpha", "answer": 3}\nbeta gamma\n')
    assert main(["eval", "dtr", str(run), "--prompts", str(prompts), "--max-new-tokens", "4", "--no-progress"]) == 0
    assert "accuracy" in capsys.readouterr().out
    code, _, err = run_cli("eval", "think-at-n", run, "--task", "arithmetic", "--rules", "dtr,vibes")
    assert code == 2 and "unknown think rule 'vibes'" in err
    prompts.write_text('{"answer": 3}\n')
    code, _, err = run_cli("eval", "dtr", run, "--prompts", prompts)
    assert code == 2 and "needs a string 'prompt'" in err
    prompts.write_text("alpha\n")
    code, _, err = run_cli("eval", "dtr", run, "--prompts", prompts, "--shots", "2")
    assert code == 2 and "give --task with --shots" in err and "Traceback" not in err
