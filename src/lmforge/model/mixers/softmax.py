"""Causal grouped-query softmax attention with RoPE, and its KV-cache decoding state."""

from __future__ import annotations

import torch
from torch import nn

from lmforge.config import ModelConfig
from lmforge.model.mixers import MixerState, register_mixer
from lmforge.ops.attention import attention
from lmforge.ops.rope import apply_rope, rope_cos_sin


class KVCache(MixerState):
    """Keys and values of every position seen so far, [B, n_kv_heads, max_len, head_dim].

    Positions index the cache directly, so sequences of a batch may sit at different
    positions; a query attends to the cached keys at positions up to its own.
    """

    def __init__(self, batch: int, n_kv_heads: int, max_len: int, head_dim: int, device, dtype):
        self.k = torch.zeros(batch, n_kv_heads, max_len, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)

    def update(self, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor):
        """Store k, v [B, Hkv, T, d] at `positions` [B, T]; return all keys, values and the mask."""
        rows = torch.arange(k.shape[0], device=k.device)[:, None]
        self.k[rows, :, positions] = k.transpose(1, 2).to(self.k.dtype)
        self.v[rows, :, positions] = v.transpose(1, 2).to(self.v.dtype)
        length = int(positions.max()) + 1
        key_pos = torch.arange(length, device=k.device)
        mask = (key_pos[None, None, :] <= positions[:, :, None])[:, None]  # [B, 1, T, S]
        return self.k[:, :, :length], self.v[:, :, :length], mask


@register_mixer("softmax")
class SoftmaxAttention(nn.Module):
    """Multi-head attention with grouped KV heads, RoPE and a causal mask (Llama layout)."""

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)
        self.rope_theta = cfg.rope_theta

    def project(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries [B, H, T, d] and keys, values [B, Hkv, T, d], with RoPE applied to q and k."""
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = rope_cos_sin(positions, self.head_dim, self.rope_theta, q.dtype)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def output(self, out: torch.Tensor) -> torch.Tensor:
        """Merge heads [B, H, T, d] and project back to the model width."""
        b, _, t, _ = out.shape
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))

    def forward(self, x: torch.Tensor, positions: torch.Tensor, state: KVCache | None = None) -> torch.Tensor:
        q, k, v = self.project(x, positions)
        if state is None:
            out = attention(q, k, v)
        else:
            k, v, mask = state.update(k, v, positions)
            out = attention(q, k.to(q.dtype), v.to(q.dtype), mask)
        return self.output(out)

    def mixing_flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token of q k^T and p v under a causal mask (PaLM appendix B, halved)."""
        return 6.0 * seq_len * self.n_heads * self.head_dim

    def new_state(self, batch: int, max_len: int, device, dtype) -> KVCache:
        return KVCache(batch, self.n_kv_heads, max_len, self.head_dim, device, dtype)
