"""`QuantLinear`: a drop-in for `nn.Linear` holding packed integer weights.

Stored (and saved) form: `qweight` codes (uint8 [N, K] for 8 bits, two per byte
[N, ceil(K/2)] for 4 bits), `scales` and `zeros` float16 [N, G] (see `grid.py`).

Compute: decoding multiplies one or a few rows by the weight, which is memory-bound, so
for small batches the layer runs PyTorch's packed CPU kernels on the compact weight
(`_weight_int8pack_mm`, `_weight_int4pack_mm_for_cpu`); both are fast only with bf16
activations on these CPUs (fp32 activations hit a slow path, measured in
benchmarks/quantization.py), so the input is cast to bf16 for them. Larger batches
(prefill, evaluation) are compute-bound and faster as one float matrix product on the
dequantized weight, which is also the reference the kernels are tested against. Where
the two cross depends on the shape and the machine: `calibrate_kernel_rows` measures it
per layer shape (the engine does at start-up); until then `KERNEL_MAX_ROWS` is used.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.quant.grid import Grid, dequantize, expand_groups
from lmforge.quant.pack import pack_int4, unpack_int4

KERNEL_MAX_ROWS = 16  # the default crossover (SmolLM2's shapes, 2 cores) before a layer is calibrated
INT4_KERNEL_GROUPS = (32, 64, 128, 256)


class QuantLinear(nn.Module):
    """y = x W^T + b with W = (u - z) * s stored as integer codes u (see module docstring)."""

    def __init__(self, in_features: int, out_features: int, grid: Grid, bias: bool = False):
        super().__init__()
        self.in_features, self.out_features, self.grid = in_features, out_features, grid
        n_groups = grid.n_groups(in_features)
        width = in_features if grid.bits == 8 else -(-in_features // 2)
        self.register_buffer("qweight", torch.zeros(out_features, width, dtype=torch.uint8))
        self.register_buffer("scales", torch.ones(out_features, n_groups, dtype=torch.float16))
        self.register_buffer("zeros", torch.zeros(out_features, n_groups, dtype=torch.float16))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.kernel_max_rows = KERNEL_MAX_ROWS  # inputs of at most this many rows run the packed kernel
        self.keep_dense = False  # keep the dequantized weight of the float path once made (the engine may ask)
        self._dense: torch.Tensor | None = None
        self._kernel: tuple | None = None
        self._kernel_group = self.kernel_group()
        self._grid_fits_kernel = (grid.group_size is None if grid.bits == 8
                                  else self._kernel_group is not None and out_features % 16 == 0)

    @classmethod
    def from_codes(cls, codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, grid: Grid,
                   bias: torch.Tensor | None = None) -> "QuantLinear":
        """A layer from codes [N, K] (uint8) and group parameters [N, G]."""
        n, k = codes.shape
        layer = cls(k, n, grid, bias is not None)
        layer.qweight.copy_(codes if grid.bits == 8 else pack_int4(codes))
        layer.scales.copy_(scales)
        layer.zeros.copy_(zeros)
        if bias is not None:
            layer.bias.copy_(bias.detach())
        return layer

    @classmethod
    def concat(cls, layers: list["QuantLinear"]) -> "QuantLinear":
        """One layer computing every layer's outputs (same input width and grid), side by side: q, k and v
        projections as one product. The given layers' buffers become views of the new one's (no copy kept)."""
        first = layers[0]
        if any(m.in_features != first.in_features or m.grid != first.grid for m in layers):
            raise ValueError("only layers with the same input width and grid can be concatenated")
        fused = cls(first.in_features, sum(m.out_features for m in layers), first.grid,
                    any(m.bias is not None for m in layers))
        fused.kernel_max_rows, fused.keep_dense = first.kernel_max_rows, first.keep_dense
        at = 0
        for m in layers:
            rows = slice(at, at + m.out_features)
            for name in ("qweight", "scales", "zeros"):
                getattr(fused, name)[rows] = getattr(m, name)
                setattr(m, name, getattr(fused, name)[rows])
            if fused.bias is not None and m.bias is not None:
                fused.bias[rows] = m.bias
                m.bias = fused.bias[rows]
            at += m.out_features
        return fused

    def codes(self) -> torch.Tensor:
        """Integer codes [N, K] (uint8)."""
        return self.qweight if self.grid.bits == 8 else unpack_int4(self.qweight, self.in_features)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The float weight [N, K] this layer stands for."""
        return dequantize(self.codes(), self.scales, self.zeros, self.grid, dtype)

    def dense_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """The dequantized weight for the float path; kept after the first use when `keep_dense` is set
        (many rows at a time then run one float product without dequantizing every call)."""
        if self._dense is not None and self._dense.dtype == dtype:
            return self._dense
        weight = self.dequantize(dtype)
        if self.keep_dense:
            self._dense = weight
        return weight

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized float32 weight (for code that reads `.weight`, such as the loss head)."""
        return self.dequantize()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if rows.shape[0] <= self.kernel_max_rows and self.kernel_supported(x):
            out = self.kernel_forward(rows)
            out = out if out.dtype == x.dtype else out.to(x.dtype)
        else:
            out = F.linear(rows, self.dense_weight(x.dtype))
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.view(*x.shape[:-1], self.out_features)

    def kernel_supported(self, x: torch.Tensor) -> bool:
        """Whether a packed CPU kernel computes this layer (CPU, no autograd, a grid the kernel takes)."""
        return self._grid_fits_kernel and x.device.type == "cpu" and not (x.requires_grad and torch.is_grad_enabled())

    def kernel_group(self) -> int | None:
        """The int4 kernel's group length: the longest it takes that divides both our group and the width
        (SmolLM2's 576 columns at g128 run as groups of 64 with each scale repeated, so nothing is padded)."""
        group = self.grid.group_len(self.in_features)
        fits = [g for g in INT4_KERNEL_GROUPS if group % g == 0 and self.in_features % g == 0]
        return max(fits, default=None)

    def kernel_forward(self, rows: torch.Tensor) -> torch.Tensor:
        """x W^T with the packed kernel, bf16 activations; the result in bf16 (int4) or fp32 (int8)."""
        if self._kernel is None:
            self._kernel = self._prepare_kernel()
        x = rows if rows.dtype == torch.bfloat16 else rows.to(torch.bfloat16)
        if self.grid.bits == 8:
            signed, ones, scale, offset = self._kernel
            out = torch.ops.aten._weight_int8pack_mm(x, signed, ones).float() * scale
            # sum_k x_k (u - z) s = s (x . (u - 128)) - s (z - 128) sum_k x_k
            return out if offset is None else out - x.float().sum(-1, keepdim=True) * offset
        packed, group, scale_zeros = self._kernel
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, group, scale_zeros)

    def _prepare_kernel(self) -> tuple:
        scales, zeros = self.scales.float(), self.zeros.float()
        if self.grid.bits == 8:
            signed = (self.qweight.to(torch.int16) - 128).to(torch.int8)
            ones = torch.ones(self.out_features, dtype=torch.bfloat16)
            offset = None if bool((zeros == 128).all()) else scales[:, 0] * (zeros[:, 0] - 128)
            return signed, ones, scales[:, 0], offset
        k, group = self.in_features, self._kernel_group
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(self.codes().to(torch.int32), 2)
        own = self.grid.group_len(k)
        scales, zeros = expand_groups(scales, own, k)[:, ::group], expand_groups(zeros, own, k)[:, ::group]
        # the kernel computes (u - 8) * s + m per group, so m = (8 - z) * s
        scale_zeros = torch.stack([scales.t(), ((8 - zeros) * scales).t()], dim=-1).to(torch.bfloat16).contiguous()
        return packed, group, scale_zeros

    def _load_from_state_dict(self, *args, **kwargs):
        self._kernel = self._dense = None  # new codes: repack and dequantize again on next use
        super()._load_from_state_dict(*args, **kwargs)

    def extra_repr(self) -> str:
        group = self.grid.group_size or "channel"
        return f"in_features={self.in_features}, out_features={self.out_features}, bits={self.grid.bits}, group={group}"


@torch.no_grad()
def calibrate_kernel_rows(modules, dtype: torch.dtype, max_rows: int = 64, repeats: int = 5) -> dict:
    """Measure, per distinct shape of the quantized layers among `modules`, up to how many input rows the
    packed kernel beats the float product on the dequantized weight (kept or made per call, as each layer's
    `keep_dense` says), and set each layer's `kernel_max_rows`.

    Rows are tried in powers of two; the crossover is the largest count where the kernel's median time
    is below the float path's. Returns {(in, out, bits, group): rows}.
    """
    layers = [m for m in modules if isinstance(m, QuantLinear)]
    chosen: dict = {}
    for layer in layers:
        key = (layer.in_features, layer.out_features, layer.grid.bits, layer.grid.group_size)
        if key not in chosen:
            chosen[key] = _crossover(layer, dtype, max_rows, repeats)
        layer.kernel_max_rows = chosen[key]
    return chosen


def _median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _crossover(layer: QuantLinear, dtype: torch.dtype, max_rows: int, repeats: int) -> int:
    x = torch.randn(max_rows, layer.in_features, dtype=dtype)
    if not layer.kernel_supported(x):
        return 0
    best, rows = 0, 1
    while rows <= max_rows:
        part = x[:rows]
        kernel = _median_seconds(lambda: layer.kernel_forward(part), repeats)
        dense = _median_seconds(lambda: F.linear(part, layer.dense_weight(dtype)), repeats)
        if kernel >= dense:
            break
        best, rows = rows, rows * 2
    return best


def kernel_reference(layer: QuantLinear, rows: torch.Tensor) -> torch.Tensor:
    """What the packed kernel computes, in float64: bf16-rounded inputs (and, for int4, bf16-rounded
    group scales and offsets) times the integer codes. The kernel must match this up to its bf16 output."""
    x = rows.to(torch.bfloat16).double()
    codes = layer.codes().double()
    k = layer.in_features
    group = layer.grid.group_len(k)
    scales, zeros = layer.scales.float(), layer.zeros.float()
    if layer.grid.bits == 8:
        w = (codes - expand_groups(zeros.double(), group, k)) * expand_groups(scales.double(), group, k)
    else:
        s_bf16 = scales.to(torch.bfloat16).double()
        m_bf16 = ((8 - zeros) * scales).to(torch.bfloat16).double()
        w = (codes - 8) * expand_groups(s_bf16, group, k) + expand_groups(m_bf16, group, k)
    return x @ w.t()
