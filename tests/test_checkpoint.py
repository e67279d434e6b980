import json

import pytest
import torch
from helpers import tiny_run_config

from lmforge.checkpoint import load_checkpoint, save_checkpoint
from lmforge.errors import CheckpointError
from lmforge.model.transformer import Transformer
from lmforge.tokenizer import Tokenizer


@pytest.fixture
def saved(tmp_path, corpus_dir, prepared):
    cfg = tiny_run_config(corpus_dir, tmp_path, prepared.dir)
    cfg.model.vocab_size = prepared.tokenizer.vocab_size
    torch.manual_seed(0)
    model = Transformer(cfg.model)
    path = save_checkpoint(tmp_path / "ckpt", model, cfg, prepared.tokenizer)
    return path, model


def test_round_trip(saved):
    path, model = saved
    ckpt = load_checkpoint(path)
    assert ckpt.config.model == model.cfg
    for k, v in model.state_dict().items():
        assert torch.equal(ckpt.model.state_dict()[k], v)
    assert "head.weight" not in ckpt.model.state_dict()  # tied: stored once


def test_overwrite_is_atomic_and_leaves_no_temporaries(saved):
    path, model = saved
    save_checkpoint(path, model, load_checkpoint(path).config, load_checkpoint(path).tokenizer)
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".")) == []


def test_truncated_and_corrupt_weights(saved):
    path, _ = saved
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)
    weights.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)
    weights.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(path)


def test_tokenizer_from_another_vocab(saved):
    path, _ = saved
    Tokenizer.train(["some other text entirely"] * 5, vocab_size=280).save(path)
    with pytest.raises(CheckpointError, match="another checkpoint"):
        load_checkpoint(path)


def test_shape_mismatch_is_named(saved):
    path, _ = saved
    config = json.loads((path / "config.json").read_text())
    config["lmforge"]["model"]["d_ff"] += 32
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"mlp\.(down|gate|up)_proj\.weight has shape"):
        load_checkpoint(path)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="not an lmforge config"):
        load_checkpoint(tmp_path)
