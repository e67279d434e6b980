"""The `sparse` mixer: softmax attention restricted to the key blocks SpargeAttention2 selects.

Same parameters as `softmax` (so a dense checkpoint loads into it unchanged) and the same
KV cache; each forward predicts a block mask from pooled queries and keys
(`ops.block_sparse.predict_block_mask`) and attends over the kept blocks only. When
decoding, each new query is its own query block: the rule is the same, applied to one
query over the cached key blocks.
"""

from __future__ import annotations

import torch

from lmforge.config import ModelConfig
from lmforge.model.mixers import register_mixer
from lmforge.model.mixers.softmax import KVCache, SoftmaxAttention
from lmforge.ops.block_sparse import block_sparse_attention, predict_block_mask


@register_mixer("sparse")
class SparseAttention(SoftmaxAttention):
    """Block-sparse causal attention with the hybrid top-k + top-p block rule (arXiv 2602.13515)."""

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__(cfg, layer)
        self.block_q, self.block_k = cfg.sparse_block_q, cfg.sparse_block_k
        self.top_k, self.top_p, self.sink = cfg.sparse_top_k, cfg.sparse_top_p, cfg.sparse_sink
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
        return self.output(block_sparse_attention(q, k, v, mask, self.block_q, self.block_k, q_positions))
