"""Session fixtures: a small generated corpus and its prepared shards."""

from __future__ import annotations

import pytest
from helpers import write_corpus

from lmforge.config import DataConfig
from lmforge.data.prepare import prepare


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    write_corpus(d)
    return d


@pytest.fixture(scope="session")
def prepared(corpus_dir, tmp_path_factory):
    cfg = DataConfig(corpus=str(corpus_dir), vocab_size=300, val_bytes=8000)
    return prepare(cfg, tmp_path_factory.mktemp("prepared") / "data", progress=False)
