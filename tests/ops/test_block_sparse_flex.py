"""The compiled FlexAttention kernel of block-sparse attention against the float64 dense reference.

FlexAttention compiles once per padded length and block shape (`flex_length`), tens of seconds on
a CPU, so each length below takes its own block shape and the causality check reuses a compiled
shape: three compilations cover 1,024 / 1,500 / 4,096 tokens and three block shapes.
"""

import pytest
import torch
import torch.nn.functional as F

from lmforge.ops.block_sparse import (
    block_sparse_attention_flex,
    block_sparse_attention_reference,
    flex_length,
    lagged_query_means,
    predict_block_mask,
)

HEADS, HEAD_DIM = 2, 16


def qkv(t: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, HEADS, t, HEAD_DIM, generator=g) for _ in range(3)]


def sparse_mask(q, k, bq, bk):
    return predict_block_mask(lagged_query_means(q, bq), k, bq, bk, top_k=0.1, top_p=0.2)


def test_flex_length_pads_to_a_power_of_two_and_whole_blocks():
    assert flex_length(1024, 64, 64) == 1024
    assert flex_length(1500, 128, 64) == 2048
    assert flex_length(1025, 64, 64) == 2048
    assert flex_length(40, 64, 48) == 192  # lcm(64, 48) = 192 is above the power of two 64


@pytest.mark.parametrize("t, bq, bk", [(1024, 64, 64), (1500, 128, 64), (4096, 32, 128)])
def test_flex_matches_the_dense_masked_reference(t, bq, bk):
    q, k, v = qkv(t)
    mask = sparse_mask(q, k, bq, bk)
    out = block_sparse_attention_flex(q, k, v, mask, bq, bk)
    ref = block_sparse_attention_reference(q.double(), k.double(), v.double(), mask, bq, bk)
    dense = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=True)
    assert (ref - dense).abs().max() > 0.1  # the mask drops blocks that matter: a dense kernel would fail
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)  # float32 kernel, float64 reference


def test_flex_output_never_depends_on_later_tokens():
    t, bq, bk, cut = 1500, 128, 64, 1000  # the compiled shape of the 1,500-token case; 1000 is inside a block
    q, k, v = qkv(t, seed=1)
    q2, k2, v2 = (x.clone() for x in (q, k, v))
    for x in (q2, k2, v2):
        x[:, :, cut:] = torch.randn_like(x[:, :, cut:])
    out = block_sparse_attention_flex(q, k, v, sparse_mask(q, k, bq, bk), bq, bk)
    changed = block_sparse_attention_flex(q2, k2, v2, sparse_mask(q2, k2, bq, bk), bq, bk)
    assert torch.equal(out[:, :, :cut], changed[:, :, :cut])
    assert not torch.allclose(out[:, :, cut:], changed[:, :, cut:])


def test_the_block_mask_alone_gives_the_reference_values_uncompiled():
    """Uncompiled FlexAttention evaluates the mask_mod on every pair, so the BlockMask's mask_mod itself must
    drop the blocks the mask drops (cheap: 256 tokens, no compilation)."""
    from torch.nn.attention.flex_attention import flex_attention

    from lmforge.ops.block_sparse import _flex_block_mask

    t, bq, bk = 256, 32, 32
    q, k, v = qkv(t, seed=2)
    mask = sparse_mask(q, k, bq, bk)
    out = flex_attention(q, k, v, block_mask=_flex_block_mask(mask, t, bq, bk))
    ref = block_sparse_attention_reference(q.double(), k.double(), v.double(), mask, bq, bk)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)
