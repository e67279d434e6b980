"""Causal grouped-query softmax attention with RoPE, over a dense batch or the engine's paged KV cache."""

from __future__ import annotations

import torch
from torch import nn

from lmforge.config import ModelConfig
from lmforge.model.layers import fuse_linears
from lmforge.model.mixers import register_mixer
from lmforge.model.step import CacheEntry, CacheSpec, Group, Step, run_groups
from lmforge.ops.attention import attention, decode_attention
from lmforge.ops.paged import gather_tokens, write_tokens
from lmforge.ops.rope import apply_rope, rope_cos_sin
from lmforge.ops.sequence_parallel import SequenceShard, ulysses_attention, upipe_attention


def heads_first(t: torch.Tensor) -> torch.Tensor:
    """[B, T, H, d] -> [B, H, T, d]."""
    return t.transpose(1, 2)


def head_rows(linear: nn.Linear, x: torch.Tensor, heads: list[int], head_dim: int) -> torch.Tensor:
    """The outputs [B, T, |heads|, d] of a per-head projection for the given heads only."""
    index = torch.tensor(heads, device=x.device)
    weight = linear.weight.view(-1, head_dim, linear.in_features)[index].flatten(0, 1)
    bias = None if linear.bias is None else linear.bias.view(-1, head_dim)[index].flatten()
    return nn.functional.linear(x, weight, bias).view(*x.shape[:2], len(heads), head_dim)


@register_mixer("softmax")
class SoftmaxAttention(nn.Module):
    """Multi-head attention with grouped KV heads, RoPE and a causal mask (Llama layout)."""

    _qkv: nn.Module | None = None  # set by `fuse_projections`; not a registered submodule
    sequence_shard: SequenceShard | None = None  # set by `model.transformer.sequence_sharded` while training

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)
        self.rope_theta = cfg.rope_theta

    def project(self, x: torch.Tensor, positions: torch.Tensor, step: Step | None = None):
        """Queries [B, T, H, d] and keys, values [B, T, Hkv, d], with RoPE applied to q and k."""
        b, t, _ = x.shape
        h, kv, d = self.n_heads, self.n_kv_heads, self.head_dim

        def angles():
            return self.rope_angles(positions, x.dtype)

        cos, sin = angles() if step is None else step.cached(("rope", d, self.rope_theta, x.dtype), angles)
        if self._qkv is not None and not torch.is_grad_enabled():  # one product, one rotation of q and k together
            qkv = self._qkv(x).view(b, t, h + 2 * kv, d)
            qk = apply_rope(qkv[:, :, : h + kv], cos, sin)
            return qk[:, :, :h], qk[:, :, h:], qkv[:, :, h + kv :]
        q = self.q_proj(x).view(b, t, h, d)
        k = self.k_proj(x).view(b, t, kv, d)
        v = self.v_proj(x).view(b, t, kv, d)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def rope_angles(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE's cos and sin [B, T, 1, d] at `positions`, broadcast over heads."""
        cos, sin = rope_cos_sin(positions, self.head_dim, self.rope_theta, dtype)
        return cos.transpose(1, 2), sin.transpose(1, 2)

    def project_heads(self, x: torch.Tensor, positions: torch.Tensor, q_heads: list[int], kv_heads: list[int]):
        """Queries of `q_heads` [B, T, |q_heads|, d] and keys, values of `kv_heads` (None when empty), with RoPE:
        only those heads' rows of the projections are computed (attention in stages, UPipe)."""
        cos, sin = self.rope_angles(positions, x.dtype)
        q = apply_rope(head_rows(self.q_proj, x, q_heads, self.head_dim), cos, sin)
        if not kv_heads:
            return q, None, None
        k = apply_rope(head_rows(self.k_proj, x, kv_heads, self.head_dim), cos, sin)
        return q, k, head_rows(self.v_proj, x, kv_heads, self.head_dim)

    def fuse_projections(self) -> list[nn.Module]:
        """For inference: q, k and v as one matrix product (see `fuse_linears`); returns the fused module."""
        object.__setattr__(self, "_qkv", fuse_linears([self.q_proj, self.k_proj, self.v_proj]))
        return [self._qkv] if self._qkv is not None else []

    def output(self, out: torch.Tensor) -> torch.Tensor:
        """Merge heads [B, T, H, d] and project back to the model width."""
        return self.o_proj(out.flatten(2))

    def forward(self, x: torch.Tensor, positions: torch.Tensor, step: Step | None = None) -> torch.Tensor:
        shard = self.sequence_shard if step is None else None
        if shard and shard.stage_heads:
            project = lambda q_heads, kv_heads: self.project_heads(x, positions, q_heads, kv_heads)  # noqa: E731
            return self.output(upipe_attention(self.attend_dense, project, self.n_heads, self.n_kv_heads, shard))
        q, k, v = self.project(x, positions, step)
        if shard:
            return self.output(ulysses_attention(self.attend_dense, q, k, v, shard))
        if step is None:
            return self.output(self.attend_dense(q, k, v))
        memory = step.memory.layers[self.layer]
        write_tokens(memory["k"], step.slot_mapping, k[0])
        write_tokens(memory["v"], step.slot_mapping, v[0])
        return self.output(run_groups(step, lambda g, q, k, v: self.attend(g, memory, q, k, v), q, k, v))

    def attend_dense(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Causal attention [B, T, H, d] of whole sequences from position 0 (the training path's core)."""
        return heads_first(attention(heads_first(q), heads_first(k), heads_first(v)))

    def attend(self, group: Group, memory: dict[str, torch.Tensor], q, k, v) -> torch.Tensor:
        """One group's attention, [batch, query_len, H, d]: over its own new tokens when it has no past,
        else over every cached token of each sequence up to the query's position."""
        if group.has_past:
            k, v = gather_tokens(memory["k"], group.block_tables), gather_tokens(memory["v"], group.block_tables)
            if group.decoding:
                out = decode_attention(heads_first(q), k, v, group.causal_bias(torch.float32)).to(q.dtype)
            else:  # a prompt chunk after cached tokens: one sequence, whose [Hkv, 1, S, d] is [1, Hkv, S, d]
                k, v = k.transpose(0, 1).to(q.dtype), v.transpose(0, 1).to(q.dtype)
                out = attention(heads_first(q), k, v, group.causal_bias(q.dtype))
        else:
            out = attention(heads_first(q), heads_first(k), heads_first(v))
        return heads_first(out)

    def cache_spec(self, dtype: torch.dtype, block_size: int) -> CacheSpec:
        """Keys and values of every token."""
        kv = CacheEntry((self.n_kv_heads, self.head_dim), dtype)
        return CacheSpec(per_token={"k": kv, "v": kv})

    def mixing_flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token of q k^T and p v under a causal mask (PaLM appendix B, halved)."""
        return 6.0 * seq_len * self.n_heads * self.head_dim
