import dataclasses
import re

import pytest

from lmforge.config import (DataConfig, ModelConfig, TrainConfig, load_run_config, parse_overrides, range_error,
                            run_config_from_dict)
from lmforge.data.mixing import MixConfig
from lmforge.data.pipeline import OutputConfig, RunSection, load_pipeline_config
from lmforge.errors import ConfigError


def test_builtin_quickstart_loads_with_overrides():
    cfg = load_run_config("quickstart", ["train.steps=3", "model.d_model=64", "train.lr=1"])
    assert cfg.train.steps == 3 and cfg.model.d_model == 64
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.data.corpus == "stdlib"


def test_the_quickstart_trains_on_a_budget_and_the_benchmarks_model_by_steps():
    quickstart, small = load_run_config("quickstart"), load_run_config("small")
    assert 0 < quickstart.train.time_budget <= 600 and quickstart.train.optimizer != "adamw"
    assert small.train.time_budget == 0 and small.train.optimizer == "adamw" and small.train.steps == 600
    assert small.data == quickstart.data  # one prepared corpus serves both


def test_override_values_are_parsed_as_toml():
    assert parse_overrides(["model.mixers=['softmax','softmax']", "data.corpus=./my texts", "train.compile=true"]) == {
        "model": {"mixers": ["softmax", "softmax"]},
        "data": {"corpus": "./my texts"},
        "train": {"compile": True},
    }


@pytest.mark.parametrize(
    "raw, overrides, message",
    [
        ({"train": {"stepz": 3}}, [], "unknown config key 'train.stepz'"),
        ({}, ["train.steps=abc"], "train.steps: expected int"),
        ({}, ["train.steps=1.5"], "train.steps: expected int"),
        ({}, ["train.compile=1"], "train.compile: expected bool"),
        ({"optim": {}}, [], "unknown config section [optim]"),
        ({}, ["nosection=3"], "no section has it"),
        ({}, ["vocab_size=3"], "it is in model and data"),
        ({}, ["=3"], "not of the form section.key=value"),
        ({}, ["train.schedule=linear"], "train.schedule must be"),
        ({}, ["model.n_heads=3"], "not divisible"),
        ({}, ["model.n_heads=0"], "model.n_heads must be >= 1, got 0"),
        ({}, ["model.n_kv_heads=0"], "model.n_kv_heads must be >= 1, got 0"),
        ({}, ["model.rope_theta=0"], "model.rope_theta must be > 0, got 0.0"),
        ({}, ["model.sparse_top_p=1.5"], "model.sparse_top_p must be in (0, 1], got 1.5"),
        ({}, ["model.head_dim=15"], "model.head_dim=15 must be even"),
        ({"data": {"vocab_size": 100}}, [], "data.vocab_size must be >= 259, got 100"),
        ({}, ["data.val_bytes=-1"], "data.val_bytes must be >= 0, got -1"),
        ({}, ["train.lr=-1"], "train.lr must be > 0, got -1.0"),
        ({}, ["train.lr=nan"], "train.lr must be a finite number, got nan"),
        ({}, ["train.weight_decay=-inf"], "train.weight_decay must be a finite number, got -inf"),
        ({}, ["train.matrix_lr=0"], "train.matrix_lr must be > 0, got 0.0"),
        ({}, ["train.beta2=1"], "train.beta2 must be in [0, 1), got 1.0"),
        ({}, ["train.grad_clip=-1"], "train.grad_clip must be >= 0, got -1.0"),
        ({}, ["train.decay_fraction=2"], "train.decay_fraction must be in [0, 1], got 2.0"),
        ({}, ["train.warmup_steps=-5"], "train.warmup_steps must be >= 0, got -5"),
        ({}, ["train.log_every=0"], "train.log_every must be >= 1, got 0"),
        ({}, ["train.seed=-1"], "train.seed must be in [0, "),
    ],
)
def test_bad_config_is_a_clear_error(raw, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        run_config_from_dict(raw, overrides)


def test_missing_config_file_names_builtins(tmp_path):
    with pytest.raises(ConfigError, match="quickstart"):
        load_run_config(tmp_path / "nope.toml")


def test_invalid_toml_is_reported(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[train\nsteps = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_run_config(p)


def test_model_defaults_are_derived():
    cfg = ModelConfig(d_model=96, n_heads=3, mixers=["softmax"])
    assert cfg.head_dim == 32 and cfg.n_kv_heads == 3 and cfg.d_ff % 32 == 0 and cfg.d_ff >= 8 * 96 // 3
    assert [ModelConfig(n_layers=5, mixers=["a", "b"]).mixer_for(i) for i in range(5)] == ["a", "b", "a", "b", "a"]


def test_bracketed_bare_words_are_a_list():
    cfg = load_run_config("quickstart", ["model.mixers=[2mamba, softmax]", "model.n_layers=2"])
    assert cfg.model.mixers == ["2mamba", "softmax"]
    assert load_run_config("quickstart", ["model.mixers=[mamba2s]"]).model.mixers == ["mamba2s"]


def test_bare_keys_resolve_to_their_only_section():
    cfg = load_run_config("quickstart", ["optimizer=namo", "seed=3", "corpus=pydoc"])
    assert cfg.train.optimizer == "namo" and cfg.train.seed == 3 and cfg.data.corpus == "pydoc"


@pytest.mark.parametrize(
    "override, message",
    [
        ("run.workers=0", "run.workers must be >= 1, got 0"),
        ("run.shards=-2", "run.shards must be >= 1, got -2"),
        ("output.vocab_size=258", "output.vocab_size must be >= 259, got 258"),
        ("output.tokenizer_sample_bytes=-1", "output.tokenizer_sample_bytes must be >= 0, got -1"),
        ("mix.temperature=0", "mix.temperature must be > 0, got 0.0"),
        ("mix.max_epochs=nan", "mix.max_epochs must be a finite number, got nan"),
        ("mix.budget_bytes=-1", "mix.budget_bytes must be >= 0, got -1"),
        ("mix.weights={code=1, prose=-0.5}", "mix.weights.prose must be >= 0, got -0.5"),
    ],
)
def test_pipeline_values_out_of_range_name_the_key(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_pipeline_config("stdlib", [override])


@pytest.mark.parametrize("cls", [ModelConfig, DataConfig, TrainConfig, MixConfig, OutputConfig, RunSection])
def test_defaults_lie_in_their_declared_ranges(cls):
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    assert range_error(cls, defaults) is None


def test_range_edges_are_accepted():
    cfg = load_run_config(None, ["train.grad_clip=0", "train.decay_fraction=1", "train.beta1=0", "train.eval_every=0",
                                 "model.sparse_top_k=1", "data.vocab_size=259", "train.warmup_steps=0"])
    assert cfg.train.grad_clip == 0 and cfg.train.decay_fraction == 1 and cfg.data.vocab_size == 259


def test_a_config_that_is_not_a_table_is_refused():
    with pytest.raises(ConfigError, match="must be a table of sections"):
        run_config_from_dict([1, 2])
