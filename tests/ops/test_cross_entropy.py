import pytest
import torch

from lmforge.ops import cross_entropy
from lmforge.ops.cross_entropy import linear_cross_entropy, linear_cross_entropy_reference


@pytest.mark.parametrize("chunk_elements", [50, 1 << 21])
def test_matches_reference_in_float64(monkeypatch, chunk_elements):
    monkeypatch.setattr(cross_entropy, "CHUNK_ELEMENTS", chunk_elements)  # several chunks, or one
    torch.manual_seed(0)
    n, d, v = 37, 16, 23
    h = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    w = torch.randn(v, d, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, v, (n,))
    t[3] = t[10] = -100
    ours = linear_cross_entropy(h, w, t)
    ref = linear_cross_entropy_reference(h, w, t).double()
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    g_ours = torch.autograd.grad(ours * 1.7, (h, w))
    g_ref = torch.autograd.grad(ref * 1.7, (h, w))
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_float32_matches_reference():
    torch.manual_seed(1)
    h, w = torch.randn(8, 4), torch.randn(11, 4)
    t = torch.randint(0, 11, (8,))
    torch.testing.assert_close(linear_cross_entropy(h, w, t), linear_cross_entropy_reference(h, w, t))


def test_bf16_compute_is_close_and_grads_flow():
    torch.manual_seed(2)
    h = torch.randn(64, 32, requires_grad=True)
    w = torch.randn(100, 32, requires_grad=True)
    t = torch.randint(0, 100, (64,))
    ours = linear_cross_entropy(h, w, t, compute_dtype=torch.bfloat16)
    ref = linear_cross_entropy_reference(h, w, t)
    assert abs(ours.item() - ref.item()) < 0.05 * ref.item()
    ours.backward()
    assert h.grad.dtype == torch.float32 and w.grad.dtype == torch.float32
    gh, gw = torch.autograd.grad(linear_cross_entropy_reference(h, w, t), (h, w))
    assert torch.nn.functional.cosine_similarity(h.grad.flatten(), gh.flatten(), dim=0) > 0.99
    assert torch.nn.functional.cosine_similarity(w.grad.flatten(), gw.flatten(), dim=0) > 0.99


def test_no_grad_path_skips_gradient_buffers():
    h, w = torch.randn(5, 3), torch.randn(7, 3)
    t = torch.randint(0, 7, (5,))
    with torch.no_grad():
        assert torch.allclose(linear_cross_entropy(h, w, t), linear_cross_entropy_reference(h, w, t))


@pytest.mark.parametrize("chunk_elements", [50, 1 << 21])
def test_kl_divergence_matches_reference_in_float64(monkeypatch, chunk_elements):
    from lmforge.ops.cross_entropy import linear_kl_divergence, linear_kl_divergence_reference

    monkeypatch.setattr(cross_entropy, "CHUNK_ELEMENTS", chunk_elements)
    torch.manual_seed(3)
    h = torch.randn(29, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(13, 8, dtype=torch.float64, requires_grad=True)
    th, tw = torch.randn(29, 8, dtype=torch.float64), torch.randn(13, 8, dtype=torch.float64)
    ours, ref = linear_kl_divergence(h, w, th, tw), linear_kl_divergence_reference(h, w, th, tw)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(torch.autograd.grad(ours, (h, w)), torch.autograd.grad(ref, (h, w))):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert linear_kl_divergence(th, tw, th, tw).abs() < 1e-12  # a model agrees with itself
