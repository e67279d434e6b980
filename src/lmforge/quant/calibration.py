"""Calibration sequences: token windows drawn from a corpus the model has not trained on."""

from __future__ import annotations

from typing import Callable

import torch

from lmforge.errors import DataError
from lmforge.tokenizer import Tokenizer


def calibration_windows(tokenizer: Tokenizer, texts: list[str], n_seqs: int = 128, seq_len: int = 512, seed: int = 0,
                        log: Callable[[str], None] = print) -> torch.Tensor:
    """`n_seqs` windows of `seq_len` tokens [n, T] at seed-random offsets of the documents' token stream.

    When the texts hold fewer tokens than asked, say so and use what exists: as many
    non-overlapping windows as fit, or one shorter window.
    """
    stream = torch.tensor(tokenizer.encode_documents(texts), dtype=torch.long)
    if len(stream) < 2:
        raise DataError("the calibration data holds no tokens; give a corpus with text in it")
    if len(stream) < n_seqs * seq_len:
        fit = len(stream) // seq_len
        if fit == 0:
            log(f"calibration data has {len(stream)} tokens, fewer than one window of {seq_len}; using one window of {len(stream)}")
            return stream[None]
        log(f"calibration data has {len(stream):,} tokens, fewer than {n_seqs} x {seq_len}; using {fit} windows")
        return stream[: fit * seq_len].view(fit, seq_len)
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(stream) - seq_len + 1, (n_seqs,), generator=g)
    return torch.stack([stream[s: s + seq_len] for s in starts.tolist()])
