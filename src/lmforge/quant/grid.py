"""Uniform integer grids for weights: x ~ (u - z) * s, codes u in [0, 2^bits - 1], per group of input columns.

One representation serves every method and kernel. A weight [N, K] is cut along K into
groups of `group_size` columns (the last group may be shorter when K is not a multiple:
it is simply a smaller group); each (row, group) has a scale s and a zero point z, so
`scales` and `zeros` are [N, G] with G = ceil(K / group_size). `group_size=None` means
one group per row (per output channel). Symmetric grids put z at the middle code
2^(bits-1) and are what int8 uses by default (Jacob et al., arXiv 1712.05877);
asymmetric grids span [min, max] with z = round(-min / s), the int4 baseline ("RTN").
Zero points are floats so HQQ's optimised, non-integer zeros fit the same form. Scales
and zeros are stored as float16 (as in GGUF): 0.25 bits per weight at g128, 1 at g32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmforge.errors import LmforgeError


class QuantizationError(LmforgeError):
    """A model or setting cannot be quantized as asked."""


@dataclass(frozen=True)
class Grid:
    """The integer grid of one quantized weight: bit width, group length, symmetry."""

    bits: int
    group_size: int | None = None  # None: one group per output channel
    symmetric: bool = False

    def __post_init__(self) -> None:
        if self.bits not in (4, 8):
            raise QuantizationError(f"bits must be 4 or 8, got {self.bits}")
        if self.group_size is not None and (self.group_size < 8 or self.group_size % 8):
            raise QuantizationError(f"group size must be a positive multiple of 8 (e.g. 32, 64, 128), got {self.group_size}")

    @property
    def max_code(self) -> int:
        return 2**self.bits - 1

    def group_len(self, k: int) -> int:
        """Columns per group for an input width k."""
        return k if self.group_size is None else self.group_size

    def n_groups(self, k: int) -> int:
        return -(-k // self.group_len(k))


def expand_groups(params: torch.Tensor, group: int, k: int) -> torch.Tensor:
    """Per-group values [N, G] repeated to per-column values [N, K]."""
    return params.repeat_interleave(group, dim=1)[:, :k]


def group_reduce(w: torch.Tensor, group: int, reduce) -> torch.Tensor:
    """`reduce(values, dim=-1)` over each group of columns of w [N, K] -> [N, G]; a short last group is reduced alone."""
    n, k = w.shape
    full = k // group * group
    parts = []
    if full:
        parts.append(reduce(w[:, :full].reshape(n, full // group, group), dim=-1))
    if full < k:
        parts.append(reduce(w[:, full:], dim=-1)[:, None])
    return torch.cat(parts, dim=1)


def _amax(x: torch.Tensor, dim: int) -> torch.Tensor:
    return x.amax(dim=dim)


def _amin(x: torch.Tensor, dim: int) -> torch.Tensor:
    return x.amin(dim=dim)


def grid_params(w: torch.Tensor, grid: Grid, max_shrink: torch.Tensor | float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Scales and zero points [N, G] that span each group's range (times `max_shrink`, for clipping searches)."""
    group = grid.group_len(w.shape[1])
    w = w.float()
    if grid.symmetric:
        half = 2 ** (grid.bits - 1)
        absmax = group_reduce(w.abs(), group, _amax) * max_shrink
        scales = storable(absmax / (half - 1))
        return scales, torch.full_like(scales, float(half))
    hi = group_reduce(w, group, _amax).clamp(min=0) * max_shrink
    lo = group_reduce(w, group, _amin).clamp(max=0) * max_shrink
    scales = storable((hi - lo) / grid.max_code)
    zeros = torch.round(-lo / scales).clamp(0, grid.max_code)
    return scales, zeros


def storable(scales: torch.Tensor) -> torch.Tensor:
    """Scales rounded to the float16 they are stored in (so codes are computed against the stored value), never 0."""
    return scales.clamp(min=2**-24).half().float()


def per_group(fn, w: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group: int) -> torch.Tensor:
    """fn(values, s, z) over w [N, K] with each group's parameters [N, G] broadcast over its columns
    (whole groups as one [N, G, group] view, a short last group alone): no [N, K] copies of the parameters."""
    n, k = w.shape
    full = k // group * group
    parts = []
    if full:
        g = full // group
        parts.append(fn(w[:, :full].reshape(n, g, group), scales[:, :g, None], zeros[:, :g, None]).reshape(n, full))
    if full < k:
        parts.append(fn(w[:, full:], scales[:, -1:], zeros[:, -1:]))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def quantize(w: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Integer codes [N, K] (uint8) of w on the grid given by scales and zeros [N, G]."""
    return per_group(lambda v, s, z: round_codes(v, s, z, grid.max_code), w, scales, zeros, grid.group_len(w.shape[1]))


def round_codes(w: torch.Tensor, s: torch.Tensor, z: torch.Tensor, max_code: int) -> torch.Tensor:
    """clamp(round(w / s + z), 0, max_code) as uint8, for per-column (broadcast) s and z."""
    return torch.clamp(torch.round(w.float() / s + z), 0, max_code).to(torch.uint8)


def dequantize(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, grid: Grid,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Float weight (u - z) * s [N, K] from codes [N, K] and group parameters [N, G]."""
    return per_group(lambda u, s, z: (u.to(dtype) - z) * s, codes, scales.to(dtype), zeros.to(dtype),
                     grid.group_len(codes.shape[1]))


def fake_quantize(w: torch.Tensor, grid: Grid, max_shrink: torch.Tensor | float = 1.0) -> torch.Tensor:
    """w rounded to its grid and back (the float weight a quantized layer would compute with)."""
    scales, zeros = grid_params(w, grid, max_shrink)
    return dequantize(quantize(w, scales, zeros, grid), scales, zeros, grid, w.dtype)


def rtn(w: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round-to-nearest: codes, scales, zeros of w [N, K] on the min/max grid (the baseline every method must beat)."""
    scales, zeros = grid_params(w, grid)
    return quantize(w, scales, zeros, grid), scales, zeros
