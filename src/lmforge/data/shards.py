"""Token shards: a flat array of token ids on disk (numpy memmap) plus document ends.

`<name>.bin` holds the tokens of every document, each followed by the end-of-text id;
`<name>.idx.npy` holds the offset just past each document. uint16 when the vocabulary
fits, else uint32.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lmforge.errors import DataError


def token_dtype(vocab_size: int) -> np.dtype:
    """Smallest unsigned dtype that holds every id of the vocabulary."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


class ShardWriter:
    """Appends documents' tokens to `<prefix>.bin` (written inside a directory that is
    swapped into place atomically once complete, see `lmforge.data.prepare`)."""

    def __init__(self, prefix: str | os.PathLike, vocab_size: int):
        self.prefix = Path(prefix)
        self.dtype = token_dtype(vocab_size)
        self.vocab_size = vocab_size
        self._file = open(self.prefix.with_suffix(".bin"), "wb")
        self._ends: list[int] = []
        self.tokens = 0

    def add(self, ids: list[int]) -> None:
        """Append one document's token ids (already ending with the separator if wanted)."""
        arr = np.asarray(ids, dtype=np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
            raise DataError(f"token id out of range for vocabulary of {self.vocab_size} in {self.prefix}")
        self._file.write(arr.astype(self.dtype).tobytes())
        self.tokens += arr.size
        self._ends.append(self.tokens)

    def close(self) -> None:
        """Flush the tokens and write the document index."""
        self._file.close()
        np.save(self.prefix.with_suffix(".idx.npy"), np.asarray(self._ends, dtype=np.uint64))


class TokenShard:
    """Read-only view of a shard written by ShardWriter."""

    def __init__(self, prefix: str | os.PathLike, vocab_size: int):
        prefix = Path(prefix)
        bin_path, idx_path = prefix.with_suffix(".bin"), prefix.with_suffix(".idx.npy")
        if not bin_path.is_file() or not idx_path.is_file():
            raise DataError(f"token shard {prefix} is missing; run `lmforge prepare` again")
        size = bin_path.stat().st_size
        dtype = token_dtype(vocab_size)
        if size % dtype.itemsize:
            raise DataError(f"{bin_path} is truncated ({size} bytes); run `lmforge prepare` again")
        self.tokens = np.memmap(bin_path, dtype=dtype, mode="r") if size else np.zeros(0, dtype)
        self.doc_ends = np.load(idx_path)
        if len(self.doc_ends) and int(self.doc_ends[-1]) != len(self.tokens):
            raise DataError(f"{bin_path} does not match its index {idx_path}; run `lmforge prepare` again")

    def __len__(self) -> int:
        return len(self.tokens)
