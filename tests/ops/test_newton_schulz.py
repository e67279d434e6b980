import pytest
import torch

from lmforge.ops.newton_schulz import newton_schulz5, orthogonalize_reference


def _gains(g: torch.Tensor, o: torch.Tensor):
    """Input singular values and what NS5 mapped each to (u_i^T O v_i), relative to ||G||_F."""
    u, s, vh = torch.linalg.svd(g.double(), full_matrices=False)
    mapped = torch.einsum("ki,kl,il->i", u, o.double(), vh)
    return s / torch.linalg.matrix_norm(g.double()), mapped


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(64, 64), (96, 256), (256, 96), (32, 512)])
def test_singular_values_land_in_the_band(dtype, shape):
    torch.manual_seed(0)
    g = torch.randn(*shape)
    o = newton_schulz5(g, compute_dtype=dtype)
    rel, mapped = _gains(g, o)
    assert o.shape == g.shape and o.dtype == g.dtype
    significant = rel > 5e-3  # 5 quintic steps multiply tiny values by 3.4445^5 ~ 480; smaller ones stay small
    assert mapped[significant].min() > 0.5 and mapped.max() < 1.5
    if shape[0] != shape[1]:  # random rectangular matrices are well conditioned: every value is in the band
        assert significant.all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ill_conditioned_input(dtype):
    torch.manual_seed(1)
    u, _, vh = torch.linalg.svd(torch.randn(128, 128))
    g = u @ torch.diag(torch.logspace(0, -6, 128)) @ vh
    rel, mapped = _gains(g, newton_schulz5(g, compute_dtype=dtype))
    assert mapped[rel > 5e-3].min() > 0.5 and mapped.max() < 1.5 and mapped.min() > -0.05


def test_close_to_the_exact_polar_factor_in_direction():
    torch.manual_seed(2)
    g = torch.randn(64, 192, dtype=torch.float64)
    o = newton_schulz5(g, compute_dtype=None)
    ref = orthogonalize_reference(g)
    cos = (o * ref).sum() / (o.norm() * ref.norm())
    assert cos > 0.97


def test_batched_equals_one_by_one():
    torch.manual_seed(3)
    stack = torch.randn(3, 40, 24)
    batched = newton_schulz5(stack, compute_dtype=None)
    for i in range(3):
        torch.testing.assert_close(batched[i], newton_schulz5(stack[i], compute_dtype=None), rtol=1e-5, atol=1e-6)
