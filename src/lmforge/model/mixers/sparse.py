"""The `sparse` mixer: softmax attention restricted to the key blocks SpargeAttention2 selects.

Same parameters as `softmax` (so a dense checkpoint loads into it unchanged) and the same
KV cache; each forward predicts a block mask from pooled queries and keys
(`ops.block_sparse.predict_block_mask`) and attends over the kept blocks only. When
decoding, each new query is its own query block: the rule is the same, applied to one
query over the cached key blocks.

Two kernels compute the attention: gathering the kept blocks for the fused SDPA kernel
(forward and backward, any device), and compiled FlexAttention with a BlockMask, which is
several times faster on long sequences but has no backward on CPU. `sparse_kernel="auto"`
takes FlexAttention for long sequences when no gradient is needed (or on a GPU).
"""

from __future__ import annotations

import torch

from lmforge.config import ModelConfig
from lmforge.model.mixers import register_mixer
from lmforge.model.mixers.softmax import KVCache, SoftmaxAttention
from lmforge.ops.block_sparse import block_sparse_attention, block_sparse_attention_flex, predict_block_mask

FLEX_MIN_LENGTH = 1024  # shorter sequences are not worth a compilation per shape


@register_mixer("sparse")
class SparseAttention(SoftmaxAttention):
    """Block-sparse causal attention with the hybrid top-k + top-p block rule (arXiv 2602.13515)."""

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__(cfg, layer)
        self.block_q, self.block_k = cfg.sparse_block_q, cfg.sparse_block_k
        self.top_k, self.top_p, self.sink = cfg.sparse_top_k, cfg.sparse_top_p, cfg.sparse_sink
        self.kernel = cfg.sparse_kernel
        self.last_mask: torch.Tensor | None = None  # the block mask of the latest call, for inspection

    def forward(self, x: torch.Tensor, positions: torch.Tensor, state: KVCache | None = None) -> torch.Tensor:
        q, k, v = self.project(x, positions)
        if state is not None:
            k, v, _ = state.update(k, v, positions)
            k, v = k.to(q.dtype), v.to(q.dtype)
        groups = self.n_heads // self.n_kv_heads
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        q_positions = positions[0]
        mask = predict_block_mask(q, k, self.block_q, self.block_k, self.top_k, self.top_p, self.sink, q_positions)
        self.last_mask = mask
        if self._use_flex(q, k, q_positions):
            return self.output(block_sparse_attention_flex(q, k, v, mask, self.block_q, self.block_k))
        return self.output(block_sparse_attention(q, k, v, mask, self.block_q, self.block_k, q_positions))

    def _use_flex(self, q: torch.Tensor, k: torch.Tensor, q_positions: torch.Tensor) -> bool:
        aligned = q.shape[-2] == k.shape[-2] and int(q_positions[0]) == 0  # FlexAttention's query/key layout
        if self.kernel != "auto":
            return self.kernel == "flex" and aligned
        no_backward_here = q.device.type == "cpu" and torch.is_grad_enabled() and q.requires_grad
        return aligned and q.shape[-2] >= FLEX_MIN_LENGTH and not no_backward_here
