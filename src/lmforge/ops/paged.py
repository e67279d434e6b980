"""Paged token memory: write new tokens' entries into pool blocks, gather a sequence's entries back in order.

A pool is head-major, [H, num_blocks, entries_per_block, *rest] for entries of shape
(H, *rest); a sequence's entries live in the blocks its block table lists, position p in
block table[p // block_size] (PagedAttention, Kwon et al., arXiv 2309.06180). Gathering a
batch of sequences then yields [H, batch, length, *rest], which views as [H * batch,
length, *rest] without a copy: the layout batched matrix products read, so the gather is
the only pass over the cache per layer. The reference for everything read through these
is the same computation on the contiguous sequence (the training path), which the mixers'
tests compare against.
"""

from __future__ import annotations

import torch


def _flat(pool: torch.Tensor) -> torch.Tensor:
    """[H, every slot of every block, *rest]."""
    return pool.view(pool.shape[0], -1, *pool.shape[3:])


def write_tokens(pool: torch.Tensor, slot_mapping: torch.Tensor, values: torch.Tensor) -> None:
    """Store values [N, H, *rest] at flat token slots [N] (block * block_size + offset) of `pool`."""
    values = values if values.dtype == pool.dtype else values.to(pool.dtype)
    _flat(pool).index_copy_(1, slot_mapping, values.transpose(0, 1))


def accumulate_tokens(pool: torch.Tensor, slot_mapping: torch.Tensor, positions: torch.Tensor, values: torch.Tensor,
                      every: int) -> None:
    """Add values [N, H, *rest] into a pool that keeps one sum per aligned run of `every` positions.

    A token at the start of a run (position % every == 0) first clears its entry, so a
    block that held another sequence's sums needs no cleaning when it is reused.
    """
    flat = _flat(pool)
    entries = torch.div(slot_mapping, every, rounding_mode="floor")
    flat.index_fill_(1, entries[positions % every == 0], 0)
    flat.index_add_(1, entries, values.to(pool.dtype).transpose(0, 1))


def gather_tokens(pool: torch.Tensor, block_tables: torch.Tensor) -> torch.Tensor:
    """[H, batch, width * entries_per_block, *rest]: every entry of each sequence's blocks, in position order.

    Rows hold whole blocks: entries past a sequence's length belong to no position of it
    (or to unrelated blocks where its table was padded), and callers mask them.
    """
    batch, width = block_tables.shape
    heads, per_block = pool.shape[0], pool.shape[2]
    rows = pool.view(heads, pool.shape[1], -1).index_select(1, block_tables.reshape(-1))
    return rows.view(heads, batch, width * per_block, *pool.shape[3:])
