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

import torch

from lmforge.config import ModelConfig
from lmforge.model.mixers import register_mixer
from lmforge.model.mixers.softmax import KVCache, SoftmaxAttention
from lmforge.ops.block_sparse import (
    block_sparse_attention,
    block_sparse_attention_flex,
    lagged_query_means,
    predict_block_mask,
)

FLEX_MIN_LENGTH = 1024  # shorter sequences are not worth a compilation per shape


class SparseState(KVCache):
    """KV cache plus the running sum of the queries in every query block."""

    def __init__(self, batch: int, n_heads: int, n_kv_heads: int, max_len: int, head_dim: int, block_q: int, device, dtype):
        super().__init__(batch, n_kv_heads, max_len, head_dim, device, dtype)
        self.block_q = block_q
        self.q_sums = torch.zeros(batch, n_heads, -(-max_len // block_q), head_dim, device=device, dtype=dtype)

    def summaries(self, q: torch.Tensor, q_positions: torch.Tensor) -> torch.Tensor:
        """Add the new queries to their blocks; return the lagged summaries of the blocks they are in."""
        blocks = q_positions // self.block_q
        self.q_sums.index_add_(2, blocks, q.to(self.q_sums.dtype))
        first, last = int(blocks[0]), int(blocks[-1])
        wanted = torch.arange(first - 1, last, device=q.device)
        out = self.q_sums.index_select(2, wanted.clamp(min=0)) / self.block_q
        if first == 0:
            out[:, :, 0] = 0
        return out.to(q.dtype)


@register_mixer("sparse")
class SparseAttention(SoftmaxAttention):
    """Block-sparse causal attention with the hybrid top-k + top-p block rule (arXiv 2602.13515)."""

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__(cfg, layer)
        self.block_q, self.block_k = cfg.sparse_block_q, cfg.sparse_block_k
        self.top_k, self.top_p, self.sink = cfg.sparse_top_k, cfg.sparse_top_p, cfg.sparse_sink
        self.kernel = cfg.sparse_kernel
        self.last_mask: torch.Tensor | None = None  # the block mask of the latest call, for inspection

    def forward(self, x: torch.Tensor, positions: torch.Tensor, state: SparseState | None = None) -> torch.Tensor:
        q, k, v = self.project(x, positions)
        q_positions = positions[0]
        if state is None:
            summary = lagged_query_means(q, self.block_q)
        else:
            summary = state.summaries(q, q_positions)
            k, v, _ = state.update(k, v, positions)
            k, v = k.to(q.dtype), v.to(q.dtype)
        groups = self.n_heads // self.n_kv_heads
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        first_block = int(q_positions[0]) // self.block_q
        mask = predict_block_mask(summary, k, self.block_q, self.block_k, self.top_k, self.top_p, self.sink, first_block)
        self.last_mask = mask
        if self._use_flex(q, k, q_positions):
            return self.output(block_sparse_attention_flex(q, k, v, mask, self.block_q, self.block_k))
        return self.output(block_sparse_attention(q, k, v, mask, self.block_q, self.block_k, q_positions))

    def _use_flex(self, q: torch.Tensor, k: torch.Tensor, q_positions: torch.Tensor) -> bool:
        whole = q.shape[-2] == k.shape[-2] and int(q_positions[0]) == 0  # FlexAttention's query/key layout
        if self.kernel != "auto":
            return self.kernel == "flex" and whole
        backward_on_cpu = q.device.type == "cpu" and torch.is_grad_enabled() and q.requires_grad
        return whole and q.shape[-2] >= FLEX_MIN_LENGTH and not backward_on_cpu

    def new_state(self, batch: int, max_len: int, device, dtype) -> SparseState:
        return SparseState(batch, self.n_heads, self.n_kv_heads, max_len, self.head_dim, self.block_q, device, dtype)
