"""Decontamination: drop training documents that share a word n-gram with evaluation texts.

The test of GPT-3 (Brown et al., 2020, appendix C) and its successors: a document is
contaminated when any of its word 13-grams also occurs in an evaluation text. Texts are
normalised as in exact dedup (`lmforge.data.dedup.normalize`), so case, punctuation and spacing
do not hide an overlap. The evaluation n-grams are kept as a sorted array of unique 64-bit
hashes (8 bytes each; a false match needs a 2^-64 collision).

An evaluation text shorter than n words contributes its whole text as one n-gram, which
matches only a document that is the same short text after normalisation: searching for short
texts inside longer documents would drop every document that contains a common phrase.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lmforge.data.dedup import ngram_hashes, ngram_hashes_batch
from lmforge.data.document import Document
from lmforge.data.readers import read_jsonl
from lmforge.data.steps import Filter
from lmforge.errors import ConfigError, DataError

EVAL_SUFFIXES = (".txt", ".jsonl")


def read_eval_texts(path: str | Path, text_field: str = "text") -> Iterator[str]:
    """Evaluation texts from a .txt file (the whole file is one text), a .jsonl file (the
    `text_field` of each record) or a directory holding such files (recursively, sorted)."""
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(EVAL_SUFFIXES))
        if not files:
            raise DataError(f"{path} holds no .txt or .jsonl evaluation files; point decontamination at the eval set")
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"evaluation set {path} does not exist; give a .txt or .jsonl file or a directory of them")
    for file in files:
        if file.name.endswith(".jsonl"):
            yield from (doc.text for doc in read_jsonl(file, text_field))
        else:
            yield file.read_text(encoding="utf-8")


@dataclass
class Decontaminate(Filter):
    """Drops documents sharing any word n-gram (default 13) with the evaluation texts, reason
    "contaminated". The texts come from `path` (see `read_eval_texts`), `texts`, or both."""

    path: str = ""
    texts: list[str] = field(default_factory=list)
    n: int = 13
    text_field: str = "text"

    name = "decontaminate"

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"decontamination n-gram size must be at least 1, got {self.n}")
        if not self.path and not self.texts:
            raise ConfigError("decontaminate needs path = a file or directory of evaluation texts (or texts = [...])")
        texts = itertools.chain(self.texts, read_eval_texts(self.path, self.text_field) if self.path else ())
        parts = [np.zeros(0, np.uint64)]
        while batch := list(itertools.islice(texts, 4096)):
            parts.append(np.unique(ngram_hashes_batch(batch, self.n)[0]))
        self.hashes = np.unique(np.concatenate(parts))
        self.texts = []  # only the hashes are needed from here on (and pickled to workers)

    def reject(self, doc: Document) -> str | None:
        grams = ngram_hashes(doc.text, self.n)
        if not len(self.hashes) or not len(grams):
            return None
        at = np.searchsorted(self.hashes, grams).clip(max=len(self.hashes) - 1)
        return "contaminated" if (self.hashes[at] == grams).any() else None
