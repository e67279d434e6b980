"""Session fixtures: a small generated corpus, its prepared shards, and a byte-level tokenizer with chat tokens."""

from __future__ import annotations

import pytest
from helpers import write_corpus

from lmforge.config import DataConfig
from lmforge.data.prepare import prepare
from lmforge.data.readers import read_stdlib
from lmforge.tokenizer import Tokenizer


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    write_corpus(d)
    return d


@pytest.fixture(scope="session")
def prepared(corpus_dir, tmp_path_factory):
    cfg = DataConfig(corpus=str(corpus_dir), vocab_size=300, val_bytes=8000)
    return prepare(cfg, tmp_path_factory.mktemp("prepared") / "data", progress=False)


CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


@pytest.fixture(scope="session")
def tokenizer():
    texts = [doc.text for _, doc in zip(range(40), read_stdlib())]
    tok = Tokenizer.train(texts, vocab_size=512)
    tok.hf.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    return Tokenizer(tok.hf, add_bos=False, chat_template=CHATML)
