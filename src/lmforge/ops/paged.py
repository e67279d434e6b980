"""Paged token memory: write new tokens' entries into pool blocks, gather a sequence's entries back in order.

A pool is [num_blocks, entries_per_block, *shape]; a sequence's entries live in the
blocks its block table lists, position p in block table[p // block_size] (PagedAttention,
Kwon et al., arXiv 2309.06180). The reference for everything read through these is the
same computation on the contiguous sequence (the training path), which the mixers' tests
compare against.
"""

from __future__ import annotations

import torch


def write_tokens(pool: torch.Tensor, slot_mapping: torch.Tensor, values: torch.Tensor) -> None:
    """Store values [N, *shape] at flat token slots [N] (block * block_size + offset) of `pool`."""
    pool.view(-1, *pool.shape[2:]).index_copy_(0, slot_mapping, values.to(pool.dtype))


def accumulate_tokens(pool: torch.Tensor, slot_mapping: torch.Tensor, positions: torch.Tensor, values: torch.Tensor,
                      every: int) -> None:
    """Add values [N, *shape] into a pool that keeps one sum per aligned run of `every` positions.

    A token at the start of a run (position % every == 0) first clears its entry, so a
    block that held another sequence's sums needs no cleaning when it is reused.
    """
    flat = pool.view(-1, *pool.shape[2:])
    entries = torch.div(slot_mapping, every, rounding_mode="floor")
    flat.index_fill_(0, entries[positions % every == 0], 0)
    flat.index_add_(0, entries, values.to(pool.dtype))


def gather_tokens(pool: torch.Tensor, block_tables: torch.Tensor, length: int) -> torch.Tensor:
    """[batch, length, *shape]: the first `length` entries of each sequence, in position order.

    Rows shorter than `length` end in entries of unrelated blocks; callers mask them.
    """
    batch, width = block_tables.shape
    blocks = pool.view(pool.shape[0], -1).index_select(0, block_tables.reshape(-1))  # 2-D: a fast row copy
    return blocks.view(batch, width * pool.shape[1], *pool.shape[2:])[:, :length]
