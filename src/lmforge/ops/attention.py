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


BF16_MIN_PRODUCTS = 16  # from this many (key head, row) pairs, bf16 products beat converting the cache to fp32


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Attention of a few queries q [B, H, T, d] over head-major keys and values k, v [Hkv, B, S, d]
    (as `ops.paged.gather_tokens` returns them) with an additive bias [B, 1, T, S].

    Plain batched products over the Hkv * B (key head, row) pairs: the keys are read where the
    gather put them, with no transposing copy, and the query heads of a group share their key
    head by a reshape. On CPU this beats the fused kernel for decoding, whose masked and bf16
    paths take many times longer than the arithmetic (one query over 180 keys, 9 heads on 3:
    145 us in bf16 and up to 7.7 ms with a mask, against about 50 us here). A bf16 cache is
    read in bf16 when there are many rows (its products are then faster than converting it to
    fp32 first) and in fp32 for a few; fp32 and fp64 stay as they are.
    """
    b, h, t, d = q.shape
    kv_heads, s = k.shape[0], k.shape[2]
    group = h // kv_heads
    work = k.dtype if k.dtype == torch.bfloat16 and kv_heads * b >= BF16_MIN_PRODUCTS else torch.promote_types(q.dtype, torch.float32)
    k, v = (x if x.dtype == work else x.to(work) for x in (k, v))
    queries = (q.to(work) * d**-0.5).view(b, kv_heads, group * t, d).transpose(0, 1).reshape(kv_heads * b, group * t, d)
    bias = bias.to(work)[None, :, :, None, :, :].expand(kv_heads, b, 1, group, t, s).reshape(kv_heads * b, group * t, s)
    scores = torch.baddbmm(bias, queries, k.reshape(kv_heads * b, s, d).mT)
    out = torch.bmm(scores.softmax(-1, dtype=torch.promote_types(work, torch.float32)).to(work), v.reshape(kv_heads * b, s, d))
    return out.view(kv_heads, b, group * t, d).transpose(0, 1).reshape(b, h, t, d)
