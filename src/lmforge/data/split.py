"""Deterministic train/validation split by a hash of each document's id."""

from __future__ import annotations

import hashlib
from typing import Iterable

from lmforge.errors import DataError


def id_hash(doc_id: str) -> int:
    """A stable 64-bit hash of a document id (independent of PYTHONHASHSEED)."""
    return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "big")


def choose_validation(sizes: Iterable[tuple[str, int]], val_bytes: int) -> set[str]:
    """Ids of the validation documents: in hash order, until they hold `val_bytes` of text.

    The validation share is capped at a tenth of the corpus so small corpora keep most of
    their text for training. Adding documents moves only those near the hash boundary.
    """
    items = [(id_hash(doc_id), doc_id, size) for doc_id, size in sizes if size > 0]
    if len(items) < 2:
        raise DataError(
            f"the corpus has {len(items)} non-empty document(s); at least 2 are needed to split train and validation"
        )
    target = min(val_bytes, sum(size for _, _, size in items) // 10)
    chosen: set[str] = set()
    held = 0
    for _, doc_id, size in sorted(items):
        if held >= target and chosen:
            break
        if len(chosen) == len(items) - 1:
            break
        chosen.add(doc_id)
        held += size
    return chosen
