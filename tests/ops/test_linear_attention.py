import math

import pytest
import torch

from lmforge.ops.linear_attention import (
    chunked_linear_attention,
    decayed_softmax_attention,
    decayed_softmax_reference,
    linear_attention_reference,
    recomputed_linear_attention,
    recurrent_linear_attention,
    square_features,
)


def inputs(t=37, d=8, dv=5, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(2, 3, t, d, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(2, 3, t, dv, generator=g, dtype=torch.float64)
    a = -torch.nn.functional.softplus(torch.randn(2, 3, t, generator=g, dtype=torch.float64))
    out = [q, k, v, a]
    if requires_grad:
        for x in out:
            x.requires_grad_(True)
    return out


def test_square_features_give_squared_dot_products():
    q, k, _, _ = inputs(t=5, d=6)
    assert square_features(q).shape[-1] == 6 * 7 // 2
    torch.testing.assert_close(square_features(q) @ square_features(k).mT, (q @ k.mT) ** 2, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("t, chunk", [(37, 1), (37, 8), (37, 16), (64, 64), (5, 64), (100, 32)])
def test_all_paths_agree_in_float64(order, t, chunk):
    q, k, v, a = inputs(t=t)
    ref = linear_attention_reference(q, k, v, a, order)
    y, state = chunked_linear_attention(q, k, v, a, order, chunk)
    y_rec, state_rec = recurrent_linear_attention(q, k, v, a, order)
    torch.testing.assert_close(y, ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(y_rec, ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(state, state_rec, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("order", [1, 2])
def test_prefill_then_decode_continues_exactly(order):
    q, k, v, a = inputs(t=41)
    ref = linear_attention_reference(q, k, v, a, order)
    y1, s = chunked_linear_attention(q[:, :, :29], k[:, :, :29], v[:, :, :29], a[:, :, :29], order, 8)
    y2, _ = recurrent_linear_attention(q[:, :, 29:], k[:, :, 29:], v[:, :, 29:], a[:, :, 29:], order, s)
    y3, _ = chunked_linear_attention(q[:, :, 29:], k[:, :, 29:], v[:, :, 29:], a[:, :, 29:], order, 4, s)
    torch.testing.assert_close(torch.cat([y1, y2], 2), ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(torch.cat([y1, y3], 2), ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("order", [1, 2])
def test_gradients_agree_with_the_naive_path(order):
    q, k, v, a = inputs(t=23, requires_grad=True)
    w = torch.randn(2, 3, 23, 5, dtype=torch.float64)
    grads_ref = torch.autograd.grad((linear_attention_reference(q, k, v, a, order) * w).sum(), (q, k, v, a))
    grads = torch.autograd.grad((chunked_linear_attention(q, k, v, a, order, 8)[0] * w).sum(), (q, k, v, a))
    for g, r in zip(grads, grads_ref):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-9)


def test_strong_decay_stays_finite():
    q, k, v, _ = inputs(t=300, d=4)
    a = torch.full((2, 3, 300), -80.0, dtype=torch.float64)  # cumulative sums reach -24000
    y, state = chunked_linear_attention(q, k, v, a, 1, 64)
    assert torch.isfinite(y).all() and torch.isfinite(state).all()
    # with such decay each output only sees its own token
    torch.testing.assert_close(y, (q * k).sum(-1, keepdim=True) * v, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("block", [1, 8, 256])
def test_decayed_softmax_blocks_match_reference(block):
    q, k, v, a = inputs(t=29, requires_grad=True)
    cum = a.cumsum(-1)
    ref = decayed_softmax_reference(q, k, v, a, 0.35)
    y = decayed_softmax_attention(q, k, v, cum, cum, 0.35, block=block)
    torch.testing.assert_close(y, ref, rtol=1e-9, atol=1e-9)
    w = torch.randn_like(ref)
    for g, r in zip(torch.autograd.grad((y * w).sum(), (q, k, v, a)), torch.autograd.grad((ref * w).sum(), (q, k, v, a))):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-9)


def test_decayed_softmax_queries_at_later_positions():
    q, k, v, a = inputs(t=20)
    cum = a.cumsum(-1)
    ref = decayed_softmax_reference(q, k, v, a, 0.35)
    tail = decayed_softmax_attention(q[:, :, 15:], k, v, cum[:, :, 15:], cum, 0.35)
    torch.testing.assert_close(tail, ref[:, :, 15:], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("t, chunk", [(37, 8), (16, 64), (64, 64)])
def test_training_path_without_state(order, t, chunk):
    q, k, v, a = inputs(t=t, requires_grad=True)
    y, state = chunked_linear_attention(q, k, v, a, order, chunk, need_state=False)
    assert state is None
    torch.testing.assert_close(y, linear_attention_reference(q, k, v, a, order), rtol=1e-9, atol=1e-9)
    w = torch.randn_like(y)
    for g, r in zip(torch.autograd.grad((y * w).sum(), (q, k, v, a)),
                    torch.autograd.grad((linear_attention_reference(q, k, v, a, order) * w).sum(), (q, k, v, a))):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("t, chunk", [(37, 8), (64, 64), (5, 64), (100, 32), (37, 1)])
@pytest.mark.parametrize("with_state", [False, True])
def test_recomputed_backward_matches_autograd(t, chunk, with_state):
    q, k, v, a = inputs(t=t, requires_grad=True)
    start = torch.randn(2, 3, 8, 5, dtype=torch.float64, requires_grad=True) if with_state else None
    y, final = recomputed_linear_attention(q, k, v, a, chunk, start)
    ref, ref_final = chunked_linear_attention(q, k, v, a, 1, chunk, start)
    torch.testing.assert_close(y, linear_attention_reference(q, k, v, a, 1) if start is None else ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(final, ref_final, rtol=1e-9, atol=1e-9)
    w, w_final = torch.randn_like(y), torch.randn_like(final)
    leaves = (q, k, v, a, *([start] if with_state else []))
    grads = torch.autograd.grad((y * w).sum() + (final * w_final).sum(), leaves)
    expected = torch.autograd.grad((ref * w).sum() + (ref_final * w_final).sum(), leaves)
    for g, r in zip(grads, expected):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-9)


def test_recomputed_backward_without_the_final_state():
    q, k, v, a = inputs(t=50, requires_grad=True)
    w = torch.randn(2, 3, 50, 5, dtype=torch.float64)
    grads = torch.autograd.grad((recomputed_linear_attention(q, k, v, a, 16)[0] * w).sum(), (q, k, v, a))
    expected = torch.autograd.grad((linear_attention_reference(q, k, v, a, 1) * w).sum(), (q, k, v, a))
    for g, r in zip(grads, expected):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-9)


def test_recomputed_backward_keeps_no_chunk_square():
    """What the backward keeps is linear in T: q, k, v, the decays and one state per chunk, no C x C pieces."""
    q, k, v, a = inputs(t=256, d=4, dv=4, requires_grad=True)
    shapes = []

    def pack(x):
        shapes.append(tuple(x.shape))
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        recomputed_linear_attention(q, k, v, a, 32)
    assert shapes and all(s[-2:] != (32, 32) for s in shapes)
    saved = sum(math.prod(s) for s in shapes)
    assert saved <= 3 * q.numel() + a.numel() + q.numel() // 32 * 4  # q, k, v, decays, 8 states of 4 x 4
