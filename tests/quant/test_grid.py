import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.quant.grid import Grid, QuantizationError, dequantize, fake_quantize, grid_params, quantize, rtn
from lmforge.quant.pack import pack_int4, unpack_int4


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 5), k=st.integers(1, 40), seed=st.integers(0, 1000))
def test_int4_pack_round_trip(n, k, seed):
    codes = torch.randint(0, 16, (n, k), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    packed = pack_int4(codes)
    assert packed.shape == (n, (k + 1) // 2) and packed.dtype == torch.uint8
    assert torch.equal(unpack_int4(packed, k), codes)


@pytest.mark.parametrize("grid", [Grid(8, None, True), Grid(4, 32), Grid(4, 128), Grid(4, None), Grid(8, 64, True)])
@pytest.mark.parametrize("k", [96, 576, 100])
def test_rtn_error_is_half_a_step_inside_the_range_and_one_step_at_its_ends(grid, k):
    torch.manual_seed(k)
    w = torch.randn(24, k, dtype=torch.float64)
    codes, scales, zeros = rtn(w, grid)
    g = grid.group_len(k)
    assert scales.shape == zeros.shape == (24, -(-k // g))
    assert int(codes.max()) <= grid.max_code
    err = (dequantize(codes, scales, zeros, grid, torch.float64) - w).abs()
    step = scales.double().repeat_interleave(g, dim=1)[:, :k]
    inside = (codes > 0) & (codes < grid.max_code)  # the rounded zero point can push an extreme past the last code
    assert (err[inside] <= step[inside] * (0.5 + 1e-5)).all()  # codes are rounded in float32
    assert (err <= step * (1 + 1e-5)).all()


def test_ragged_last_group_is_its_own_group():
    w = torch.randn(4, 160)
    w[:, 128:] *= 100  # a last group of 32 with a much wider range
    scales, _ = grid_params(w, Grid(4, 128))
    assert scales.shape == (4, 2) and (scales[:, 1] > 20 * scales[:, 0]).all()


def test_values_on_the_grid_survive_exactly():
    grid = Grid(4, 32)
    w = torch.randn(8, 64)
    once = fake_quantize(w, grid)
    assert torch.equal(fake_quantize(once, grid), once)


def test_symmetric_int8_zero_is_exact_and_scales_are_float16():
    w = torch.randn(16, 64)
    w[0] = 0
    codes, scales, zeros = rtn(w, Grid(8, None, True))
    assert (zeros == 128).all() and torch.equal(scales, scales.half().float())
    assert (dequantize(codes, scales, zeros, Grid(8, None, True))[0] == 0).all()


def test_bad_grids_are_refused():
    with pytest.raises(QuantizationError, match="bits"):
        Grid(3)
    with pytest.raises(QuantizationError, match="group size"):
        Grid(4, 12)


def test_quantize_codes_follow_the_formula():
    w = torch.tensor([[-1.0, -0.4, 0.0, 0.25, 1.0, 2.0, 3.0, 4.0]])
    grid = Grid(4, 8)
    scales, zeros = grid_params(w, grid)
    assert float(scales) == pytest.approx(5.0 / 15, rel=1e-3) and float(zeros) == 3.0
    assert quantize(w, scales, zeros, grid).tolist() == [[0, 2, 3, 4, 6, 9, 12, 15]]
