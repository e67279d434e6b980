"""Context parallelism's exchanges: DeepSpeed-Ulysses (Jacobs et al., arXiv 2309.14509).

Each of P ranks holds T/P consecutive tokens of every sequence. Attention needs whole sequences, so before it an
all-to-all turns the sequence shards of q, k and v into head shards (every rank gets all T tokens of H/P heads),
each rank attends over its heads alone, and a second all-to-all turns the output back into sequence shards. Both
exchanges are differentiable (the backward of an all-to-all is the reverse all-to-all), so training runs through
them unchanged. Grouped-query attention splits the KV heads the same way; with more ranks than KV heads each KV
head is repeated so that every rank receives the one its query heads read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist
from torch.distributed._functional_collectives import all_to_all_single_autograd


@dataclass(frozen=True)
class SequenceShard:
    """This rank's place in a context-parallel group: it holds tokens [rank * T/size, (rank + 1) * T/size)."""

    group: dist.ProcessGroup
    rank: int
    size: int


def _exchange(chunks: torch.Tensor, shard: SequenceShard) -> torch.Tensor:
    """All-to-all over dim 0 ([P, ...]): chunk j goes to rank j; returns the chunks received, by source rank."""
    return all_to_all_single_autograd(chunks.contiguous(), None, None, shard.group)


def sequence_to_heads(x: torch.Tensor, shard: SequenceShard) -> torch.Tensor:
    """[B, T/P, H, d] (this rank's tokens, every head) -> [B, T, H/P, d] (every token, this rank's heads)."""
    b, t, h, d = x.shape
    p = shard.size
    received = _exchange(x.reshape(b, t, p, h // p, d).permute(2, 0, 1, 3, 4), shard)  # [P source, B, t, H/P, d]
    return received.permute(1, 0, 2, 3, 4).reshape(b, p * t, h // p, d)


def heads_to_sequence(x: torch.Tensor, shard: SequenceShard) -> torch.Tensor:
    """[B, T, H/P, d] -> [B, T/P, H, d]: the inverse of `sequence_to_heads`."""
    b, full, hp, d = x.shape
    p = shard.size
    received = _exchange(x.reshape(b, p, full // p, hp, d).permute(1, 0, 2, 3, 4), shard)  # [P source, B, t, H/P, d]
    return received.permute(1, 2, 0, 3, 4).reshape(b, full // p, p * hp, d)


def kv_heads_for(kv: torch.Tensor, ranks: int) -> torch.Tensor:
    """KV heads [B, t, Hkv, d] ready to split over `ranks`: unchanged when Hkv is a multiple of the ranks, else
    each head repeated ranks / Hkv times, so rank r receives KV head r * Hkv // ranks, the one its queries read."""
    heads = kv.shape[2]
    return kv if heads % ranks == 0 else kv.repeat_interleave(ranks // heads, dim=2)


def check_heads(n_heads: int, n_kv_heads: int, ranks: int) -> str | None:
    """Why attention with these heads cannot split over `ranks` (None when it can)."""
    if n_heads % ranks:
        return f"the {n_heads} attention heads do not split evenly over {ranks} context-parallel ranks"
    if n_kv_heads % ranks and ranks % n_kv_heads:
        return (f"the {n_kv_heads} KV heads neither split evenly over {ranks} context-parallel ranks nor divide "
                "them (for repetition)")
    return None


def ulysses_attention(
    attend: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    shard: SequenceShard,
) -> torch.Tensor:
    """`attend(q, k, v)` (whole sequences, [B, T, H, d] layouts, causal from position 0) over sequence shards
    q [B, T/P, H, d], k and v [B, T/P, Hkv, d]; returns this rank's output tokens [B, T/P, H, d]."""
    q = sequence_to_heads(q, shard)
    k = sequence_to_heads(kv_heads_for(k, shard.size), shard)
    v = sequence_to_heads(kv_heads_for(v, shard.size), shard)
    return heads_to_sequence(attend(q, k, v), shard)
