import pytest
import torch

from lmforge.quant.grid import Grid, rtn
from lmforge.quant.hqq import hqq
from lmforge.quant.linear import KERNEL_MAX_ROWS, QuantLinear, kernel_reference


def make_layer(n, k, grid, bias=False, method=rtn):
    torch.manual_seed(0)
    w = torch.randn(n, k) * 0.05
    b = torch.randn(n) if bias else None
    return QuantLinear.from_codes(*method(w, grid), grid, b)


GRIDS = [Grid(8, None, True), Grid(4, 32), Grid(4, 128), Grid(4, 64)]


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("k", [256, 576])
def test_float_path_equals_dequantized_reference_in_float64(grid, k):
    layer = make_layer(48, k, grid, bias=True)
    x = torch.randn(3, KERNEL_MAX_ROWS + 5, k, dtype=torch.float64)
    ref = x @ layer.dequantize(torch.float64).t() + layer.bias.double()
    torch.testing.assert_close(layer(x), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("k", [256, 576])
def test_packed_kernel_matches_its_reference(grid, k):
    layer = make_layer(64, k, grid)
    rows = torch.randn(4, k)
    assert layer.kernel_supported(rows)
    out = layer.kernel_forward(rows).double()
    ref = kernel_reference(layer, rows)
    assert ((out - ref).abs() <= ref.abs() * 2**-7 + 1e-3 * ref.abs().max()).all()
    dense = rows.double() @ layer.dequantize(torch.float64).t()  # and the bf16 kernel stays near the exact product
    assert float((out - dense).norm() / dense.norm()) < 1e-2


def test_int8_kernel_handles_a_zero_point():
    grid = Grid(8, None, symmetric=False)
    layer = make_layer(32, 128, grid, method=hqq)
    assert not bool((layer.zeros == 128).all())
    rows = torch.randn(2, 128)
    out = layer(rows).double()
    dense = rows.double() @ layer.dequantize(torch.float64).t()
    assert float((out - dense).norm() / dense.norm()) < 1e-2


def test_decode_uses_the_kernel_and_training_the_float_path():
    layer = make_layer(32, 128, Grid(4, 32))
    x = torch.randn(1, 128, requires_grad=True)
    layer(x).sum().backward()  # differentiable through the dequantized float product
    assert x.grad is not None and layer.kernel_supported(x.detach())
    assert not layer.kernel_supported(torch.randn(1, 128, dtype=torch.float64).requires_grad_())


def test_state_dict_round_trip_is_bit_exact():
    layer = make_layer(40, 200, Grid(4, 64), bias=True)
    copy = QuantLinear(200, 40, Grid(4, 64), bias=True)
    copy.load_state_dict(layer.state_dict())
    for key, value in layer.state_dict().items():
        assert torch.equal(copy.state_dict()[key], value), key
    x = torch.randn(2, 200)
    assert torch.equal(copy(x), layer(x))
    assert layer.qweight.shape == (40, 100) and layer.scales.dtype == torch.float16


def test_loading_new_codes_repacks_the_kernel():
    a, b = make_layer(16, 64, Grid(4, 32)), QuantLinear(64, 16, Grid(4, 32))
    x = torch.randn(1, 64)
    b(x)  # packs b's (all-zero) codes
    b.load_state_dict(a.state_dict())
    assert torch.equal(b(x), a(x))


def test_weight_property_is_the_dequantized_matrix():
    layer = make_layer(8, 64, Grid(8, None, True))
    assert torch.equal(layer.weight, layer.dequantize())
