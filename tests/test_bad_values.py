"""Every bad value is refused with one line naming it, exit status 2, and no file touched.

The numeric keys and flags are enumerated from the config dataclasses and the argument
parser, so a new key or flag is covered (and must declare its range) automatically.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import types
import typing
from pathlib import Path

import pytest
from helpers import tiny_model, write_corpus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmforge.checkpoint import save_checkpoint
from lmforge.cli import Number, build_parser, main
from lmforge.config import RunConfig, field_range, load_run_config
from lmforge.data.pipeline import PipelineSections, load_pipeline_config
from lmforge.errors import ConfigError, GenerationError
from lmforge.serve.params import SamplingParams

EXAMPLES = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def numeric_type(tp) -> type | None:
    """int or float for a numeric field type (Optional too), else None."""
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    return next((a for a in args if a in (int, float)), None)


def numeric_keys(root: type) -> list[tuple[str, type, typing.Any]]:
    """(section.key, int or float, declared Range) of every numeric field of root's sections."""
    keys = []
    for section, cls in typing.get_type_hints(root).items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = numeric_type(hints[f.name])
            if tp is not None:
                keys.append((f"{section}.{f.name}", tp, field_range(cls, f.name)))
    return keys


def out_of_range(tp: type, rng) -> st.SearchStrategy[str]:
    """Text of numbers that `rng` refuses: below or above it, and (floats) NaN and infinities."""
    finite = dict(allow_nan=False, allow_infinity=False)
    options = [st.sampled_from(["nan", "inf", "-inf"])] if tp is float else []
    if rng.low is not None:
        options.append(st.integers(max_value=math.ceil(rng.low) - (0 if rng.low_open else 1)) if tp is int
                       else st.floats(max_value=rng.low, exclude_max=not rng.low_open, **finite))
    if rng.high is not None:
        options.append(st.integers(min_value=math.floor(rng.high) + (0 if rng.high_open else 1)) if tp is int
                       else st.floats(min_value=rng.high, exclude_min=not rng.high_open, **finite))
    return st.one_of(options).map(str)


def bad_values(tp: type, rng) -> st.SearchStrategy[str]:
    """Out-of-range numbers and values of the wrong type (as command-line text)."""
    wrong = ["true", "abc", '"3"', "[1, 2]"] + (["1.5", "2e3"] if tp is int else [])
    return st.one_of(out_of_range(tp, rng), st.sampled_from(wrong))


RUN_KEYS = numeric_keys(RunConfig)
PIPELINE_KEYS = numeric_keys(PipelineSections)


@pytest.mark.parametrize("key, tp, rng", RUN_KEYS + PIPELINE_KEYS, ids=[k for k, _, _ in RUN_KEYS + PIPELINE_KEYS])
def test_every_numeric_key_declares_a_range(key, tp, rng):
    assert rng.low is not None or rng.high is not None, f"{key} has no declared range; use config.bounded"


@pytest.mark.parametrize("key, tp, rng", RUN_KEYS, ids=[k for k, _, _ in RUN_KEYS])
@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_run_config_refuses_bad_values_naming_the_key(key, tp, rng, data):
    value = data.draw(bad_values(tp, rng))
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}\b"):
        load_run_config(None, [f"{key}={value}"])


@pytest.mark.parametrize("key, tp, rng", PIPELINE_KEYS, ids=[k for k, _, _ in PIPELINE_KEYS])
@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_pipeline_config_refuses_bad_values_naming_the_key(key, tp, rng, data):
    value = data.draw(bad_values(tp, rng))
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}\b"):
        load_pipeline_config("stdlib", [f"{key}={value}"])


@pytest.mark.parametrize("setting, value", [("max_tokens", -1), ("temperature", -1.0), ("temperature", math.nan),
                                            ("top_k", -3), ("top_p", 0.0), ("top_p", 2.0), ("seed", -1), ("n", 0),
                                            ("min_p", 1.5), ("presence_penalty", 3.0), ("logprobs", 21)])
def test_sampling_params_refuse_values_outside_their_range(setting, value):
    with pytest.raises(GenerationError, match=f"^{setting} must be"):
        SamplingParams(**{setting: value})


# ---- the command line --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tokenizer):
    """A directory holding a tiny checkpoint, a corpus, and config.json files that are JSON but not objects."""
    root = tmp_path_factory.mktemp("bad_values")
    model = tiny_model(tokenizer.vocab_size)
    save_checkpoint(root / "ckpt", model, RunConfig(model=model.cfg), tokenizer)
    write_corpus(root / "corpus", n_docs=6)
    for name, text in (("list_config", "[1, 2]"), ("string_config", '"x"')):
        (root / name).mkdir()
        (root / name / "config.json").write_text(text)
    return root


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with its bytes (None for a directory)."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def run(argv: list, capsys) -> tuple[int, str]:
    """Exit status and stderr of `lmforge argv`, run in-process."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def assert_refused(argv: list, capsys, root: Path, *needles: str) -> None:
    """`lmforge argv` exits 2 with one line naming each needle, no traceback, and nothing under root changed."""
    before = snapshot(root)
    code, err = run(argv, capsys)
    assert code == 2, (argv, err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert all(n in err for n in needles), (needles, err)
    assert snapshot(root) == before, argv


def required_args(command: tuple[str, ...], root: Path) -> list:
    """The arguments a command needs besides the flag under test."""
    ckpt, out = root / "ckpt", root / "new_output"
    return {
        ("generate",): [ckpt],
        ("serve",): [ckpt],
        ("eval", "perplexity"): [ckpt],
        ("eval", "dtr"): [ckpt, "--task", "arithmetic"],
        ("eval", "think-at-n"): [ckpt, "--task", "arithmetic"],
        ("eval", "lm-eval"): [ckpt],
        ("eval", "multiturn"): [ckpt],
        ("train",): ["quickstart", f"train.out={out}", f"data.corpus={root / 'corpus'}", f"data.dir={out}/data"],
        ("distill",): [ckpt, "--out", out],
        ("quantize",): [ckpt, "--out", out],
        ("data", "train-classifier"): ["--positive", root / "corpus", "--negative", root / "corpus",
                                       "--out", out / "c.npz"],
        ("data", "tasks"): ["--out", out / "tasks.jsonl"],
        ("data", "synth"): ["terminal", "--out", out],
    }[command]


def numeric_flags(parser: argparse.ArgumentParser, command: tuple[str, ...] = ()):
    """(command words, flag, its type) of every option of every subcommand that takes a number."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from numeric_flags(sub, (*command, name))
        elif action.option_strings and (isinstance(action.type, Number) or action.type in (int, float)):
            yield command, action.option_strings[-1], action


FLAGS = list(numeric_flags(build_parser()))


@pytest.mark.parametrize("command, flag, action", FLAGS, ids=[f"{' '.join(c)} {f}" for c, f, _ in FLAGS])
def test_every_numeric_flag_checks_its_range(command, flag, action):
    assert isinstance(action.type, Number) or action.choices, f"{flag} of {' '.join(command)}: use cli.Number"


RANGED_FLAGS = [(c, f, a) for c, f, a in FLAGS if isinstance(a.type, Number)]


@pytest.mark.parametrize("command, flag, action", RANGED_FLAGS, ids=[f"{' '.join(c)} {f}" for c, f, _ in RANGED_FLAGS])
@EXAMPLES
@given(data=st.data())
def test_bad_flag_values_are_one_line_errors(command, flag, action, data, workspace, capsys):
    value = data.draw(bad_values(action.type.tp, action.type.range))
    argv = [*command, *required_args(command, workspace), f"{flag}={value}"]
    assert_refused(argv, capsys, workspace, f"lmforge {' '.join(command)}: error: argument {flag}")


def test_the_reported_bad_values_are_refused_before_any_work(workspace, capsys):
    root, ckpt, corpus = workspace, workspace / "ckpt", workspace / "corpus"
    train = ["train", "quickstart", f"train.out={root / 'run'}", f"data.corpus={corpus}", f"data.dir={root / 'data'}"]
    quantize = ["quantize", ckpt, "--out", root / "quantized", "--method", "rtn"]
    prepare = ["prepare", f"data.corpus={corpus}", "--out", root / "prepared"]
    cases = [
        (["generate", ckpt, "--top-p", "0"], "--top-p"),
        (["generate", ckpt, "--top-p", "2"], "--top-p"),
        (["generate", ckpt, "--temperature", "nan"], "--temperature"),
        (["generate", ckpt, "--temperature", "-1"], "--temperature"),
        (["generate", ckpt, "--top-k", "-3"], "--top-k"),
        (["generate", ckpt, "--max-new-tokens", "-1"], "--max-new-tokens"),
        (["eval", "perplexity", ckpt, "--seq-len", "0"], "--seq-len"),
        (["eval", "perplexity", ckpt, "--seq-len", "-8"], "--seq-len"),
        (["eval", "perplexity", ckpt, "--batch-size", "0"], "--batch-size"),
        ([*train, "--until-step", "-3"], "--until-step"),
        ([*train, "--until-step", "0"], "--until-step"),
        ([*train, "model.n_heads=0"], "model.n_heads"),
        ([*train, "model.n_kv_heads=0"], "model.n_kv_heads"),
        ([*train, "train.log_every=0"], "train.log_every"),
        ([*train, "train.lr=-1"], "train.lr"),
        ([*train, "train.grad_clip=-1"], "train.grad_clip"),
        ([*train, "train.decay_fraction=2"], "train.decay_fraction"),
        ([*train, "train.warmup_steps=-5"], "train.warmup_steps"),
        ([*quantize, "--calib-seqs", "0"], "--calib-seqs"),
        ([*quantize, "--calib-len", "1"], "--calib-len"),
        ([*quantize, "--group-size", "-1"], "--group-size"),
        ([*quantize, "--bits", "5"], "--bits"),
        ([*prepare, "data.vocab_size=100"], "data.vocab_size"),
        ([*prepare, "data.val_bytes=-1"], "data.val_bytes"),
        (["data", "run", "stdlib", f"output.dir={root / 'pipeline'}", "run.workers=0"], "run.workers"),
        (["distill", ckpt, "--out", root / "student", "--layers", "0,x"], "--layers"),
        (["generate", root / "list_config"], "config.json"),
        (["generate", root / "string_config"], "config.json"),
        (["eval", "perplexity", root / "list_config"], "config.json"),
    ]
    for argv, needle in cases:
        assert_refused(argv, capsys, root, needle)
