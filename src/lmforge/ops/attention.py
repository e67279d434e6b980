"""Causal grouped-query attention: the fused kernel and its naive reference.

Grouped-query attention (Ainslie et al., "GQA", arXiv 2305.13245): n_kv_heads key/value
heads each serve n_heads / n_kv_heads query heads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Attention of q [B, H, T, d] over k, v [B, Hkv, S, d].

    `mask` [B, 1, T, S] (boolean, True = may attend, or an additive float bias) is used when
    given; otherwise the attention is causal with query i aligned to key i (S == T).
    """
    gqa = q.shape[1] != k.shape[1]
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Naive softmax(q k^T / sqrt(d)) v with explicit masking; the obviously-correct reference."""
    groups = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(groups, dim=1)
    v = v.repeat_interleave(groups, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is None:
        t, s = scores.shape[-2:]
        mask = torch.ones(t, s, dtype=torch.bool, device=q.device).tril()
    scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1) @ v


def grouped_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Attention of a few queries q [B, H, T, d] over k, v [B, Hkv, S, d] with an additive bias
    [B, 1, T, S], as plain products in fp32 (fp64 for fp64).

    For decoding (T of 1 or a few) this beats the fused kernel on CPU, whose masked and
    grouped-query paths take up to 100x longer than the arithmetic (measured: one query
    over 160 keys, 9 heads on 3: 7.7 ms through SDPA with a mask vs 34 us here). The query
    heads of a group share their key head by a reshape, without repeating keys.
    """
    b, h, t, d = q.shape
    kv_heads, group = k.shape[1], h // k.shape[1]
    work = torch.promote_types(q.dtype, torch.float32)
    queries = (q.to(work) * d**-0.5).reshape(b, kv_heads, group * t, d)
    scores = torch.baddbmm(bias.to(work)[:, :, None].expand(b, kv_heads, group, t, -1).reshape(b * kv_heads, group * t, -1),
                           queries.view(b * kv_heads, group * t, d), k.to(work).reshape(b * kv_heads, -1, d).mT)
    out = torch.bmm(scores.softmax(-1), v.to(work).reshape(b * kv_heads, -1, d))
    return out.view(b, h, t, d).to(q.dtype)
