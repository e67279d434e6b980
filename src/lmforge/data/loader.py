"""Training batches: random [B, T+1] windows of a token shard, reproducible from (seed, step).

Each epoch cuts the token stream into windows of T+1 tokens at stride T from a random
offset and visits them in a random order; sample s of the run is a pure function of the
seed and s, so resuming at any step, on any number of data-parallel ranks, continues exactly
where the run left off.
"""

from __future__ import annotations

import numpy as np
import torch

from lmforge.errors import DataError


class WindowLoader:
    """Yields input/target windows in a seeded order without replacement within an epoch."""

    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, seed: int):
        self.tokens, self.seq_len, self.batch_size, self.seed = tokens, seq_len, batch_size, seed
        self.windows_per_epoch = (len(tokens) - 1 - seq_len) // seq_len
        if self.windows_per_epoch < 1:
            raise DataError(
                f"the training split has {len(tokens)} tokens, too few for windows of {seq_len}; "
                "use a larger corpus or a smaller train.seq_len"
            )
        self._epoch = -1
        self._offset = 0
        self._order = np.empty(0, dtype=np.int64)

    def _start(self, sample: int) -> int:
        epoch, i = divmod(sample, self.windows_per_epoch)
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._offset = int(rng.integers(self.seq_len))
            self._order = rng.permutation(self.windows_per_epoch)
            self._epoch = epoch
        return self._offset + int(self._order[i]) * self.seq_len

    def batch(self, index: int, part: int = 0, parts: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch number `index`: inputs and next-token targets, int64 [B, T]; with `parts` data-parallel ranks,
        rank `part`'s B / parts consecutive rows of it (the ranks together hold the one-process batch)."""
        rows_per_part = self.batch_size // parts
        first = index * self.batch_size + part * rows_per_part
        starts = map(self._start, range(first, first + rows_per_part))
        window = torch.from_numpy(np.stack([self.tokens[s : s + self.seq_len + 1] for s in starts]).astype(np.int64))
        return window[:, :-1], window[:, 1:]


def eval_windows(tokens: np.ndarray, seq_len: int, max_tokens: int = 0) -> list[torch.Tensor]:
    """Consecutive non-overlapping windows of up to T+1 tokens (stride T) from the split's start.

    Every token after the first is predicted exactly once; `max_tokens` (0: all) caps the
    number of predicted tokens. The last window may be shorter, so nothing is skipped.
    """
    n = len(tokens) - 1
    if max_tokens:
        n = min(n, max_tokens)
    if n < 1:
        raise DataError("the validation split is empty; use a larger corpus or a larger data.val_bytes")
    starts = range(0, n, seq_len)
    return [torch.from_numpy(np.asarray(tokens[s : min(s + seq_len, n) + 1], dtype=np.int64)) for s in starts]
