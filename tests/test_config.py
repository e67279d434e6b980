import pytest

from lmforge.config import ModelConfig, load_run_config, parse_overrides, run_config_from_dict
from lmforge.errors import ConfigError


def test_builtin_quickstart_loads_with_overrides():
    cfg = load_run_config("quickstart", ["train.steps=3", "model.d_model=64", "train.lr=1"])
    assert cfg.train.steps == 3 and cfg.model.d_model == 64
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.data.corpus == "stdlib"


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
    ],
)
def test_bad_config_is_a_clear_error(raw, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
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
