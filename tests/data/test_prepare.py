import json

import numpy as np
import pytest

from lmforge.config import DataConfig
from lmforge.data.prepare import load_prepared, prepare, prepare_or_load
from lmforge.errors import DataError


def test_prepared_shards_decode_back_to_the_corpus(prepared, corpus_dir):
    m = prepared.manifest
    assert m["vocab_size"] == prepared.tokenizer.vocab_size == 300 and m["dtype"] == "uint16"
    texts = {p.name: p.read_text() for p in corpus_dir.iterdir()}
    tok = prepared.tokenizer
    decoded = []
    for split in ("train", "val"):
        shard = prepared.shard(split)
        assert len(shard) == m["splits"][split]["tokens"] and len(shard.doc_ends) == m["splits"][split]["documents"]
        ids = np.asarray(shard.tokens)
        assert (ids[shard.doc_ends.astype(np.int64) - 1] == tok.eos_id).all()
        starts = np.concatenate([[0], shard.doc_ends[:-1]]).astype(np.int64)
        decoded += [tok.decode(ids[s : e - 1].tolist()) for s, e in zip(starts, shard.doc_ends.astype(np.int64))]
        assert m["splits"][split]["bytes"] == tok.token_byte_lengths()[ids].sum()
    assert sorted(decoded) == sorted(texts.values())
    assert 0 < m["splits"]["val"]["bytes"] <= 8000 + max(len(t) for t in texts.values())


def test_reuse_when_settings_match_and_redo_when_not(prepared, corpus_dir):
    cfg = DataConfig(corpus=str(corpus_dir), vocab_size=300, val_bytes=8000)
    again = prepare_or_load(cfg, prepared.dir, progress=False)
    assert again.manifest == prepared.manifest
    other = prepare_or_load(DataConfig(corpus=str(corpus_dir), vocab_size=280, val_bytes=8000),
                            prepared.dir.parent / "other", progress=False)
    assert other.tokenizer.vocab_size == 280


def test_empty_corpus_and_tiny_vocab(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("")
    with pytest.raises(DataError, match="has no text"):
        prepare(DataConfig(corpus=str(tmp_path / "empty")), tmp_path / "out", progress=False)
    with pytest.raises(DataError, match="matches no files"):
        prepare(DataConfig(corpus=str(tmp_path / "missing")), tmp_path / "out", progress=False)
    with pytest.raises(DataError, match="minimum"):
        prepare(DataConfig(corpus=str(tmp_path / "empty"), vocab_size=100), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_load_prepared_errors(tmp_path, prepared):
    with pytest.raises(DataError, match="not a prepared data directory"):
        load_prepared(tmp_path)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(DataError, match="corrupt"):
        load_prepared(tmp_path)
    manifest = dict(prepared.manifest, vocab_size=999)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "tokenizer.json").write_bytes((prepared.dir / "tokenizer.json").read_bytes())
    with pytest.raises(DataError, match="manifest says 999"):
        load_prepared(tmp_path)


def test_shards_prepared_before_the_chat_settings_existed_are_reused(prepared, corpus_dir):
    from lmforge.data.prepare import prepare_or_load

    cfg = DataConfig(corpus=str(corpus_dir), vocab_size=300, val_bytes=8000, packing="packed")
    assert "format" not in prepared.manifest["source"] and "packing" not in prepared.manifest["source"]
    assert prepare_or_load(cfg, prepared.dir, progress=False).reused
