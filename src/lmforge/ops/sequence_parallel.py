"""Context parallelism's exchanges: DeepSpeed-Ulysses (Jacobs et al., arXiv 2309.14509) and Untied Ulysses
(UPipe; Ghadia et al., arXiv 2602.21196).

Each of P ranks holds T/P consecutive tokens of every sequence. Attention needs whole sequences, so before it an
all-to-all turns the sequence shards of q, k and v into head shards (every rank gets all T tokens of H/P heads),
each rank attends over its heads alone, and a second all-to-all turns the output back into sequence shards. Both
exchanges are differentiable (the backward of an all-to-all is the reverse all-to-all), so training runs through
them unchanged. Grouped-query attention splits the KV heads the same way; with more ranks than KV heads each KV
head is repeated so that every rank receives the one its query heads read.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist
from torch.distributed._functional_collectives import all_gather_tensor_autograd, all_to_all_single_autograd
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts


@dataclass(frozen=True)
class SequenceShard:
    """This rank's place in a context-parallel group: it holds tokens [rank * T/size, (rank + 1) * T/size).
    `stage_heads` U > 0 runs attention in stages of U heads (UPipe); 0 runs every head at once (Ulysses)."""

    group: dist.ProcessGroup
    rank: int
    size: int
    stage_heads: int = 0


def _exchange(chunks: torch.Tensor, shard: SequenceShard) -> torch.Tensor:
    """All-to-all over dim 0 ([P, ...]): chunk j goes to rank j; returns the chunks received, by source rank."""
    return all_to_all_single_autograd(chunks.contiguous(), None, None, shard.group)


def gather_ranks(t: torch.Tensor, shard: SequenceShard) -> torch.Tensor:
    """Every rank's `t`, stacked by rank [P, ...] (differentiable: each rank's gradient returns to it)."""
    return all_gather_tensor_autograd(t.unsqueeze(0).contiguous(), 0, shard.group)


def previous_rank_tail(x: torch.Tensor, length: int, shard: SequenceShard) -> torch.Tensor:
    """The last `length` tokens [B, length, C] of the previous rank's x [B, T/P, C]: what a short convolution
    over this rank's first tokens reads (zeros on rank 0, where the sequences start). Rank 0 takes the last
    rank's tail times zero rather than nothing, so that every rank's backward runs the gather's backward: a
    collective the other ranks wait for."""
    tails = gather_ranks(x[:, x.shape[1] - length :], shard)
    return tails[shard.rank - 1] * (shard.rank > 0)


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


def check_stages(n_heads: int, n_kv_heads: int, ranks: int, stage_heads: int) -> str | None:
    """Why attention cannot run in stages of `stage_heads` heads over `ranks` (None when it can): a stage gives
    every rank the same number of query heads, and the stages of a rank share its KV heads evenly."""
    problem = check_heads(n_heads, n_kv_heads, ranks)
    if problem:
        return problem
    per_rank, kv_per_rank = n_heads // ranks, max(n_kv_heads, ranks) // ranks
    if stage_heads % ranks or per_rank % (stage_heads // ranks):
        return (f"stages of {stage_heads} heads do not give each of the {ranks} ranks an equal share of its "
                f"{per_rank} heads; use a multiple of {ranks} that divides {n_heads}")
    group, share = per_rank // kv_per_rank, stage_heads // ranks
    if group % share and share % group:
        return f"stages of {stage_heads} heads split the {group} query heads that share a KV head unevenly"
    return None


# the fused attention kernels, whose outputs (output and log-sum-exp) a UPipe stage keeps for its backward
_FUSED_ATTENTION = tuple(
    getattr(torch.ops.aten, name).default
    for name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
                 "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention")
    if hasattr(torch.ops.aten, name)
)


def _keep_attention_outputs(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in _FUSED_ATTENTION else CheckpointPolicy.PREFER_RECOMPUTE


def upipe_attention(
    attend: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    project: Callable[[list[int], list[int]], tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]],
    n_heads: int,
    n_kv_heads: int,
    shard: SequenceShard,
) -> torch.Tensor:
    """Ulysses attention in stages of U = shard.stage_heads heads (Untied Ulysses' UPipe): each stage projects
    only its heads' queries, exchanges them, attends and exchanges the output back, so only U heads' whole-
    sequence tensors exist at a time; keys and values are projected once per group of stages that reads them.
    Every group runs under selective activation checkpointing: the forward keeps each stage's attention output
    and log-sum-exp (what the fused attention's backward reads besides q, k, v) and none of its q, k, v, and
    the backward recomputes the projections and exchanges, group by group, but not the attention.

    `project(q_heads, kv_heads)` returns this rank's tokens of those heads, q [B, T/P, |q_heads|, d] and k, v
    [B, T/P, |kv_heads|, d] (None when kv_heads is empty: the stage reuses its group's). Rank r handles the
    query heads Ulysses gives it, [r H/P, (r+1) H/P), m = U/P of them per stage, so each query head stays with
    its KV head; returns [B, T/P, H, d] in head order."""
    p = shard.size
    per_rank, share = n_heads // p, shard.stage_heads // p
    repeat = p // n_kv_heads if n_kv_heads < p else 1  # KV heads repeated when there are fewer than ranks
    kv_per_rank = n_kv_heads * repeat // p
    group = per_rank // kv_per_rank  # query heads per KV head on a rank
    stages_per_kv = max(1, group // share)
    stage_count = per_rank // share

    def q_heads(stage: int) -> list[int]:
        return [r * per_rank + stage * share + i for r in range(p) for i in range(share)]

    def run_stages(first: int) -> torch.Tensor:
        low, high = first * share // group, ((first + stages_per_kv) * share - 1) // group + 1
        kv = [(r * kv_per_rank + j) // repeat for r in range(p) for j in range(low, high)]
        q, k, v = project(q_heads(first), kv)
        k, v = sequence_to_heads(k, shard), sequence_to_heads(v, shard)
        outs = []
        for stage in range(first, first + stages_per_kv):
            if stage > first:
                q = project(q_heads(stage), [])[0]
            outs.append(heads_to_sequence(attend(sequence_to_heads(q, shard), k, v), shard))
        return torch.cat(outs, dim=2)

    firsts = range(0, stage_count, stages_per_kv)
    kept_attention = functools.partial(create_selective_checkpoint_contexts, _keep_attention_outputs)
    out = torch.cat([checkpoint(run_stages, first, use_reentrant=False, context_fn=kept_attention) for first in firsts],
                    dim=2)
    order = torch.tensor([h for first in firsts for stage in range(first, first + stages_per_kv) for h in q_heads(stage)])
    return out[:, :, torch.argsort(order).to(out.device)]
