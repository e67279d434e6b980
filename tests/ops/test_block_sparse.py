import pytest
import torch

from lmforge.errors import ConfigError
from lmforge.ops.block_sparse import (
    block_sparse_attention,
    block_sparse_attention_reference,
    block_sparsity,
    predict_block_mask,
    visible_blocks,
)


def qkv(t=70, d=8, seed=0, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    out = [torch.randn(2, 3, t, d, generator=g, dtype=torch.float64) for _ in range(3)]
    return [x.requires_grad_(requires_grad) for x in out]


@pytest.mark.parametrize("bq, bk", [(16, 16), (8, 16), (16, 8), (7, 5), (128, 64)])
def test_outputs_and_gradients_match_the_dense_reference(bq, bk):
    q, k, v = qkv()
    mask = predict_block_mask(q, k, bq, bk, top_k=0.3, top_p=0.5)
    out = block_sparse_attention(q, k, v, mask, bq, bk)
    ref = block_sparse_attention_reference(q, k, v, mask, bq, bk)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    w = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad((out * w).sum(), (q, k, v)), torch.autograd.grad((ref * w).sum(), (q, k, v))):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bq, bk", [(16, 16), (7, 5)])
def test_keeping_every_block_is_dense_causal_attention(bq, bk):
    q, k, v = qkv(requires_grad=False)
    mask = predict_block_mask(q, k, bq, bk, top_k=1.0, top_p=1.0)
    dense = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(block_sparse_attention(q, k, v, mask, bq, bk), dense, rtol=1e-10, atol=1e-12)
    assert block_sparsity(mask, torch.arange(70), bq, 70, bk) == 0.0


def test_mask_rule_keeps_topk_or_topp_plus_diagonal_and_sink():
    q, k, _ = qkv(t=256, requires_grad=False)
    mask = predict_block_mask(q, k, 32, 32, top_k=0.1, top_p=0.05, sink=True)
    n = 256 // 32
    vis = visible_blocks(torch.arange(256), 32, 256, 32)
    assert not (mask & ~vis).any()  # never a future block
    assert mask[..., torch.arange(n), torch.arange(n)].all()  # diagonal
    assert mask[..., :, 0].all()  # sink
    loose = predict_block_mask(q, k, 32, 32, top_k=0.1, top_p=0.9, sink=False)
    assert loose.sum() >= predict_block_mask(q, k, 32, 32, top_k=0.1, top_p=0.05, sink=False).sum()
    # the last query block sees 7 earlier blocks; top_k=0.5 keeps ceil(3.5)=4 of them plus the diagonal
    half = predict_block_mask(q, k, 32, 32, top_k=0.5, top_p=1e-9, sink=False)
    assert (half[..., -1, :].sum(-1) == 5).all()


def test_decoding_one_query_selects_as_a_block_of_one():
    q, k, v = qkv(t=50, requires_grad=False)
    full = predict_block_mask(q, k, 1, 8, 0.3, 0.4)
    last = predict_block_mask(q[:, :, -1:], k, 64, 8, 0.3, 0.4, q_positions=torch.tensor([49]))
    assert torch.equal(last[..., 0, :], full[..., -1, :])
    out = block_sparse_attention(q[:, :, -1:], k, v, last, 64, 8, torch.tensor([49]))
    ref = block_sparse_attention_reference(q, k, v, full, 1, 8)[:, :, -1:]
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kw, message", [({"top_k": 0.0}, "top_k"), ({"top_p": 1.5}, "top_p"), ({"block_q": 0}, "block sizes")])
def test_bad_settings_are_rejected(kw, message):
    q, k, _ = qkv(requires_grad=False)
    args = {"block_q": 16, "block_k": 16, "top_k": 0.1, "top_p": 0.2, **kw}
    with pytest.raises(ConfigError, match=message):
        predict_block_mask(q, k, **args)


def test_sequence_shorter_than_a_block():
    q, k, v = qkv(t=5)
    mask = predict_block_mask(q, k, 64, 64, 0.03, 0.2)
    assert mask.shape[-2:] == (1, 1)
    dense = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(block_sparse_attention(q, k, v, mask, 64, 64), dense, rtol=1e-10, atol=1e-12)
