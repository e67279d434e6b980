"""Held-out subsets of a prepared corpus's validation split, so a benchmark chooses its settings on one
subset and reports on another."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lmforge.checkpoint import load_checkpoint
from lmforge.data.loader import eval_windows
from lmforge.data.prepare import MANIFEST, PreparedData
from lmforge.data.shards import token_dtype
from lmforge.device import autocast, resolve_device, resolve_precision
from lmforge.eval.perplexity import evaluate


def split_validation(data: PreparedData, tokens: int, test_dir: Path) -> tuple[np.ndarray, int]:
    """Cut the validation split at document ends: the first documents holding >= `tokens` tokens are the
    validation subset (returned), the next ones holding >= `tokens` the test subset (its size returned), written
    as the val shard of `test_dir`, a copy of the prepared data directory sharing its tokenizer and train shard."""
    shard = data.shard("val")
    ends = [0, *(int(e) for e in shard.doc_ends)]
    cut = next(e for e in ends if e >= tokens)
    stop = next((e for e in ends if e >= cut + tokens), ends[-1])
    if stop - cut < tokens // 2:
        raise SystemExit(f"the validation split ({ends[-1]} tokens) is too small for two subsets of {tokens} tokens")
    test_dir.mkdir(parents=True, exist_ok=True)
    for name in (MANIFEST, "tokenizer.json", "tokenizer_config.json", "train.bin", "train.idx.npy"):
        link = test_dir / name
        if not link.exists() and (data.dir / name).exists():
            link.symlink_to((data.dir / name).resolve())
    np.asarray(shard.tokens[cut:stop], dtype=token_dtype(data.tokenizer.vocab_size)).tofile(test_dir / "val.bin")
    np.save(test_dir / "val.idx.npy", np.asarray([e - cut for e in ends if cut < e <= stop], dtype=np.int64))
    return np.asarray(shard.tokens[:cut]), stop - cut



def heldout_eval(out: Path, tokens: np.ndarray, token_bytes: np.ndarray, seq_len: int, batch_size: int) -> dict:
    """Loss and bits per byte of a finished run's model (in `out`) on `tokens`, evaluated as the trainer does."""
    model = load_checkpoint(out).model
    device = resolve_device("cpu")
    amp = lambda: autocast(device, resolve_precision("auto", device))  # noqa: E731
    return evaluate(model, eval_windows(tokens, seq_len), token_bytes, batch_size, amp)
