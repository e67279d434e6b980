import pytest
import torch

from lmforge.errors import ConfigError
from lmforge.ops.block_sparse import (
    block_layout,
    block_sparse_attention,
    block_sparse_attention_reference,
    block_sparsity,
    lagged_query_means,
    predict_block_mask,
)


def qkv(t=70, d=8, seed=0, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    out = [torch.randn(2, 3, t, d, generator=g, dtype=torch.float64) for _ in range(3)]
    return [x.requires_grad_(requires_grad) for x in out]


def mask_for(q, k, bq, bk, top_k, top_p, sink=True):
    return predict_block_mask(lagged_query_means(q, bq), k, bq, bk, top_k, top_p, sink)


@pytest.mark.parametrize("bq, bk", [(16, 16), (8, 16), (16, 8), (7, 5), (128, 64)])
def test_outputs_and_gradients_match_the_dense_reference(bq, bk):
    q, k, v = qkv()
    mask = mask_for(q, k, bq, bk, top_k=0.3, top_p=0.5)
    out = block_sparse_attention(q, k, v, mask, bq, bk)
    ref = block_sparse_attention_reference(q, k, v, mask, bq, bk)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    w = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad((out * w).sum(), (q, k, v)), torch.autograd.grad((ref * w).sum(), (q, k, v))):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bq, bk", [(16, 16), (7, 5)])
def test_keeping_every_block_is_dense_causal_attention(bq, bk):
    q, k, v = qkv(requires_grad=False)
    mask = mask_for(q, k, bq, bk, top_k=1.0, top_p=1.0)
    dense = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(block_sparse_attention(q, k, v, mask, bq, bk), dense, rtol=1e-10, atol=1e-12)
    assert block_sparsity(mask, 70, bq, bk) == 0.0


def test_mask_rule_keeps_topk_or_topp_plus_own_blocks_and_sink():
    q, k, _ = qkv(t=256, requires_grad=False)
    mask = mask_for(q, k, 32, 32, top_k=0.1, top_p=0.05, sink=True)
    n = 256 // 32
    own, candidates = block_layout(0, n, 32, 256, 32)
    assert not (mask & ~(own | candidates)).any()  # never a future block
    assert mask[..., torch.arange(n), torch.arange(n)].all()  # diagonal
    assert mask[..., :, 0].all()  # sink
    loose = mask_for(q, k, 32, 32, top_k=0.1, top_p=0.9, sink=False)
    assert loose.sum() >= mask_for(q, k, 32, 32, top_k=0.1, top_p=0.05, sink=False).sum()
    # the last query block has 7 earlier blocks; top_k=0.5 keeps ceil(3.5)=4 of them plus the diagonal
    half = mask_for(q, k, 32, 32, top_k=0.5, top_p=1e-9, sink=False)
    assert (half[..., -1, :].sum(-1) == 5).all()


def test_selection_never_depends_on_later_tokens():
    q, k, v = qkv(t=64, requires_grad=False)
    mask = mask_for(q, k, 8, 8, 0.2, 0.3)
    q2, k2 = q.clone(), k.clone()
    q2[:, :, 37:] += 5 * torch.randn_like(q2[:, :, 37:])
    k2[:, :, 37:] += 5 * torch.randn_like(k2[:, :, 37:])
    mask2 = mask_for(q2, k2, 8, 8, 0.2, 0.3)
    assert torch.equal(mask[..., : 37 // 8 + 1, :], mask2[..., : 37 // 8 + 1, :])  # blocks up to position 37's block


def test_a_single_decoded_query_uses_its_blocks_row():
    q, k, v = qkv(t=50, requires_grad=False)
    full = mask_for(q, k, 8, 8, 0.3, 0.4)
    summary = lagged_query_means(q, 8)[..., 49 // 8 : 49 // 8 + 1, :]
    last = predict_block_mask(summary, k, 8, 8, 0.3, 0.4, True, first_block=49 // 8)
    assert torch.equal(last[..., 0, :], full[..., -1, :])
    out = block_sparse_attention(q[:, :, -1:], k, v, last, 8, 8, torch.tensor([49]))
    ref = block_sparse_attention_reference(q, k, v, full, 8, 8)[:, :, -1:]
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kw, message", [({"top_k": 0.0}, "top_k"), ({"top_p": 1.5}, "top_p"), ({"block_q": 0}, "block sizes")])
def test_bad_settings_are_rejected(kw, message):
    q, k, _ = qkv(requires_grad=False)
    args = {"block_q": 16, "block_k": 16, "top_k": 0.1, "top_p": 0.2, **kw}
    with pytest.raises(ConfigError, match=message):
        predict_block_mask(q[..., :5, :], k, **args)


def test_sequence_shorter_than_a_block():
    q, k, v = qkv(t=5)
    mask = mask_for(q, k, 64, 64, 0.03, 0.2)
    assert mask.shape[-2:] == (1, 1)
    dense = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(block_sparse_attention(q, k, v, mask, 64, 64), dense, rtol=1e-10, atol=1e-12)
