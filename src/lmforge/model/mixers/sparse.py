"""The `sparse` mixer: softmax attention restricted to the key blocks SpargeAttention2 selects.

Same parameters as `softmax` (so a dense checkpoint loads into it unchanged). Each forward
summarises every query block by the mean query of the block before it, selects key
blocks (`ops.block_sparse.predict_block_mask`) and attends over the kept blocks only. The
decoding state is the KV cache plus running per-block query sums, so a token decoded
alone selects exactly the blocks a forward pass over the whole sequence selects.

Two kernels compute the attention: gathering the kept blocks for the fused SDPA kernel
(forward and backward, any device), and compiled FlexAttention with a BlockMask, several
times faster on long sequences but without a backward on CPU. `sparse_kernel="auto"` takes
FlexAttention for long whole-sequence passes when no gradient is needed (or on a GPU).
"""

from __future__ import annotations

import math

import torch

from lmforge.config import ModelConfig
from lmforge.model.mixers import register_mixer
from lmforge.model.mixers.softmax import SoftmaxAttention, heads_first
from lmforge.model.step import CacheEntry, CacheSpec, Group, Step, run_groups
from lmforge.ops.block_sparse import (
    block_sparse_attention,
    block_sparse_attention_flex,
    lagged_query_means,
    predict_block_mask,
)
from lmforge.ops.paged import accumulate_tokens, gather_tokens, write_tokens

FLEX_MIN_LENGTH = 1024  # shorter sequences are not worth a compilation per shape


@register_mixer("sparse")
class SparseAttention(SoftmaxAttention):
    """Block-sparse causal attention with the hybrid top-k + top-p block rule (arXiv 2602.13515).

    In the engine it keeps, besides keys and values, the sum of the queries of every
    aligned run of `query_sum_every` tokens, so the summary of any query block is a sum
    of cached entries, and a prefix-cached block carries what later queries need.
    """

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__(cfg, layer)
        self.block_q, self.block_k = cfg.sparse_block_q, cfg.sparse_block_k
        self.top_k, self.top_p, self.sink = cfg.sparse_top_k, cfg.sparse_top_p, cfg.sparse_sink
        self.kernel = cfg.sparse_kernel
        self.last_mask: torch.Tensor | None = None  # the block mask of the latest call, for inspection

    def forward(self, x: torch.Tensor, positions: torch.Tensor, step: Step | None = None) -> torch.Tensor:
        if step is None:
            return super().forward(x, positions)
        q, k, v = self.project(x, positions, step)
        memory = step.memory.layers[self.layer]
        write_tokens(memory["k"], step.slot_mapping, k[0])
        write_tokens(memory["v"], step.slot_mapping, v[0])
        every = memory["k"].shape[2] // memory["q_sum"].shape[2]
        accumulate_tokens(memory["q_sum"], step.slot_mapping, step.positions, q[0], every)
        return self.output(run_groups(step, lambda g, q, k, v: self.attend_each(g, memory, q), q, k, v))

    def attend_dense(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Block-sparse causal attention [B, T, H, d] of whole sequences from position 0 (the training path)."""
        q = heads_first(q)
        positions = torch.arange(q.shape[2], device=q.device)
        return heads_first(self.sparse(q, heads_first(k), heads_first(v), lagged_query_means(q, self.block_q), positions, 0))

    def attend_each(self, group: Group, memory: dict[str, torch.Tensor], q: torch.Tensor) -> torch.Tensor:
        """A group's attention [batch, query_len, H, d], one sequence at a time (each has its own block choice)."""
        every = memory["k"].shape[2] // memory["q_sum"].shape[2]
        rows = []
        for i in range(group.batch):
            past, length = group.past[i], group.past[i] + group.query_len
            table = group.block_tables[i : i + 1, : -(-length // group.block_size)]
            k, v = (gather_tokens(memory[name], table).transpose(0, 1)[:, :, :length].to(q.dtype) for name in ("k", "v"))
            sums = gather_tokens(memory["q_sum"], table)[:, 0, : -(-length // every)].transpose(0, 1)  # [entries, H, d]
            first = past // self.block_q
            summary = self.block_summaries(sums, every, first, (length - 1) // self.block_q).to(q.dtype)
            rows.append(self.sparse(heads_first(q[i : i + 1]), k, v, summary, group.positions[i], first))
        return heads_first(torch.cat(rows))

    def block_summaries(self, sums: torch.Tensor, every: int, first: int, last: int) -> torch.Tensor:
        """[1, H, last - first + 1, d]: the mean query of the block before each query block first..last."""
        per_block = self.block_q // every
        entries = _pad_rows(sums, per_block)
        blocks = entries.view(-1, per_block, *sums.shape[1:]).sum(1) / self.block_q  # [n_blocks, H, d]
        lagged = torch.cat([torch.zeros_like(blocks[:1]), blocks])[first : last + 1]
        return lagged.transpose(0, 1)[None]

    def sparse(self, q, k, v, summary: torch.Tensor, q_positions: torch.Tensor, first_block: int) -> torch.Tensor:
        """Block-sparse attention of q [B, H, Tq, d] at q_positions over k, v [B, Hkv, Tk, d]."""
        groups = q.shape[1] // k.shape[1]  # a rank of context parallelism holds some of the heads
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        mask = predict_block_mask(summary, k, self.block_q, self.block_k, self.top_k, self.top_p, self.sink, first_block)
        self.last_mask = mask
        if self._use_flex(q, k, first_block):
            return block_sparse_attention_flex(q, k, v, mask, self.block_q, self.block_k)
        return block_sparse_attention(q, k, v, mask, self.block_q, self.block_k, q_positions, first_block)

    def _use_flex(self, q: torch.Tensor, k: torch.Tensor, first_block: int) -> bool:
        whole = q.shape[-2] == k.shape[-2] and first_block == 0  # FlexAttention's query/key layout
        if self.kernel != "auto":
            return self.kernel == "flex" and whole
        backward_on_cpu = q.device.type == "cpu" and torch.is_grad_enabled() and q.requires_grad
        return whole and q.shape[-2] >= FLEX_MIN_LENGTH and not backward_on_cpu

    def cache_spec(self, dtype: torch.dtype, block_size: int) -> CacheSpec:
        """Keys and values of every token, and query sums of every aligned run of gcd(block_size, block_q) tokens."""
        spec = super().cache_spec(dtype, block_size)
        every = math.gcd(block_size, self.block_q)
        sums = CacheEntry((self.n_heads, self.head_dim), dtype, every)
        return CacheSpec(per_token={**spec.per_token, "q_sum": sums})


def _pad_rows(t: torch.Tensor, multiple: int) -> torch.Tensor:
    """t padded with zero rows (dim 0) to a multiple of `multiple`."""
    pad = -t.shape[0] % multiple
    return torch.cat([t, t.new_zeros(pad, *t.shape[1:])]) if pad else t
