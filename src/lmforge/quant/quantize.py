"""Quantize the one model block by block: RTN, GPTQ, AWQ or HQQ, every nn.Linear of the blocks replaced
by a QuantLinear, and the output head (int8 RTN by default, as llama.cpp keeps its output layer
at higher precision than the blocks).

Methods that learn from data (GPTQ, AWQ) run the calibration windows through the model
one block at a time, so memory holds one block's activations, never all layers' at once.
GPTQ feeds each block the outputs of the already-quantized blocks before it (the paper's
sequential scheme); AWQ feeds the float outputs (its reference implementation).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm import tqdm

from lmforge.device import resolve_precision
from lmforge.model.transformer import Transformer
from lmforge.quant import DEFAULT_AWQ_SEARCH_SEQS
from lmforge.quant.awq import awq_block
from lmforge.quant.gptq import Hessian, gptq
from lmforge.quant.grid import Grid, QuantizationError, grid_params, quantize, rtn
from lmforge.quant.hqq import hqq
from lmforge.quant.layout import is_quantized, set_module, tie_quantized_head
from lmforge.quant.linear import QuantLinear

METHODS = ("rtn", "gptq", "awq", "hqq")
CALIBRATED = ("gptq", "awq")
BATCH_SEQS = 8  # calibration sequences per forward pass
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class QuantSpec:
    """What to quantize to: method, bit width, group length (None: per output channel), head precision."""

    method: str = "gptq"
    bits: int = 4
    group_size: int | None = 128
    head_bits: int = 8  # 0 keeps the output head (and a tied embedding) in float
    head_group_size: int | None = None  # 8-bit head: None per output channel (the int8 kernel's layout); 4-bit: blocks' group
    act_order: bool = True  # GPTQ: columns by decreasing Hessian diagonal, static groups (measured: better)
    damp: float = 0.01  # GPTQ: damping as a fraction of the mean Hessian diagonal
    awq_search_seqs: int = DEFAULT_AWQ_SEARCH_SEQS  # AWQ: calibration sequences the scale search is judged on
    calib_precision: str = "auto"  # GPTQ, AWQ: calibration forwards and AWQ's scale search; auto: bf16 where native

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise QuantizationError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.head_bits not in (0, 4, 8):
            raise QuantizationError(f"head bits must be 0 (float), 4 or 8, got {self.head_bits}")
        if self.calib_precision not in PRECISIONS:
            raise QuantizationError(f"calibration precision must be one of {', '.join(PRECISIONS)}, got {self.calib_precision!r}")
        self.grid  # validates bits and group size
        if self.head_bits:
            self.head_grid()

    @property
    def grid(self) -> Grid:
        """int8: symmetric (per channel unless grouped); int4: asymmetric groups."""
        return Grid(self.bits, self.group_size, symmetric=self.bits == 8)

    def head_grid(self) -> Grid:
        if self.head_bits == 8:
            return Grid(8, self.head_group_size, symmetric=True)
        return Grid(4, self.head_group_size or self.group_size or 128)

    def to_dict(self) -> dict:
        return asdict(self)


def block_linears(block: nn.Module) -> dict[str, nn.Linear]:
    """The nn.Linear modules of a block by name."""
    return {name: m for name, m in block.named_modules() if isinstance(m, nn.Linear)}


@torch.no_grad()
def quantize_model(model: Transformer, spec: QuantSpec, calibration: torch.Tensor | None = None,
                   progress: bool = True) -> dict:
    """Quantize `model` in place; returns timing and error statistics.

    `calibration` [n, T] token windows are required by GPTQ and AWQ.
    """
    if is_quantized(model):
        raise QuantizationError("the model is already quantized; quantize its float checkpoint instead")
    if not any(block_linears(block) for block in model.layers):
        raise QuantizationError("the model's blocks have no linear layers to quantize")
    if spec.method in CALIBRATED and calibration is None:
        raise QuantizationError(f"{spec.method} needs calibration data; give --calib")
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    hidden = positions = None
    if spec.method in CALIBRATED:
        hidden = [model.embed(calibration[i:i + BATCH_SEQS]) for i in range(0, len(calibration), BATCH_SEQS)]
        positions = torch.arange(calibration.shape[1]).expand(len(calibration), -1)
    errors = []
    bf16 = resolve_precision(spec.calib_precision, model.embed.weight.device) == "bf16"
    for block in tqdm(model.layers, desc=f"{spec.method} int{spec.bits}", unit="block", disable=not progress):
        hidden = quantize_block(block, spec, hidden, positions, errors, bf16)
    if spec.head_bits:
        quantize_head(model, spec.head_grid())
    model.train(was_training)
    return {"seconds": time.perf_counter() - start, "mean_relative_weight_error": sum(errors) / max(len(errors), 1)}


def quantize_block(block: nn.Module, spec: QuantSpec, hidden: list[torch.Tensor] | None, positions: torch.Tensor | None,
                   errors: list[float], bf16: bool = False) -> list[torch.Tensor] | None:
    """Quantize one block's linears; returns the next block's calibration inputs (None without calibration).
    With `bf16` the calibration forwards (and AWQ's scale search) run their products in bf16."""
    linears = block_linears(block)
    grid = spec.grid
    results: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    if spec.method in ("rtn", "hqq"):
        for name, lin in linears.items():
            results[name] = rtn(lin.weight, grid) if spec.method == "rtn" else hqq(lin.weight, grid)
        install(block, linears, results, grid if spec.method == "rtn" else Grid(grid.bits, grid.group_size), errors)
        return None
    inputs, outputs = capture_inputs(block, list(linears), hidden, positions, spec.method == "awq", bf16)
    if spec.method == "gptq":
        results = gptq_shared(linears, inputs, spec)
        install(block, linears, results, grid, errors)
        return forward_dense(block, hidden, positions, bf16)  # inputs to the next block, quantized so far
    shrinks = awq_block(block, inputs, positions, grid, spec.awq_search_seqs, bf16)
    for name, lin in linears.items():
        scales, zeros = grid_params(lin.weight, grid, shrinks.get(name, 1.0))
        results[name] = quantize(lin.weight, scales, zeros, grid), scales, zeros
    install(block, linears, results, grid, errors)
    return outputs


def gptq_shared(linears: dict[str, nn.Linear], hessians: dict, spec: QuantSpec) -> dict:
    """GPTQ codes, scales, zeros per linear; linears sharing one Hessian (one input) are quantized as one
    matrix of their stacked rows, which gives each the same result as alone with one factorisation."""
    sharing: dict[int, list[str]] = defaultdict(list)
    for name in linears:
        sharing[id(hessians[name])].append(name)
    results = {}
    for names in sharing.values():
        w = torch.cat([linears[n].weight for n in names])
        codes, scales, zeros = gptq(w, hessians[names[0]].h, spec.grid, spec.damp, spec.act_order)
        at = 0
        for n in names:
            rows = slice(at, at + linears[n].out_features)
            results[n] = codes[rows], scales[rows], zeros[rows]
            at = rows.stop
    return results


def forward_dense(block: nn.Module, hidden: list[torch.Tensor], positions: torch.Tensor, bf16: bool) -> list[torch.Tensor]:
    """The block's outputs over the calibration batches, its quantized linears dequantized once, not per batch."""
    quantized = [m for m in block.modules() if isinstance(m, QuantLinear)]
    for m in quantized:
        m.keep_dense = True
    try:
        return [calibration_forward(block, x, positions, bf16) for x in hidden]
    finally:
        for m in quantized:
            m.keep_dense, m._dense = False, None


def calibration_forward(block: nn.Module, x: torch.Tensor, positions: torch.Tensor, bf16: bool) -> torch.Tensor:
    """The block's output on one calibration batch; with `bf16` its products run in bf16 (about 2.5x the
    float32 rate on CPUs with AVX-512 bf16) while the residual stream stays float32."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        return block(x, positions[: x.shape[0]], None).float()


def capture_inputs(block: nn.Module, names: list[str], hidden: list[torch.Tensor], positions: torch.Tensor,
                   keep: bool, bf16: bool) -> tuple[dict, list[torch.Tensor]]:
    """Run the float block over the calibration batches, recording each linear's inputs (as float32).

    Returns (inputs, block outputs): with `keep`, inputs[name] is the concatenated input
    tensor [n, T, K]; otherwise a GPTQ `Hessian` accumulated batch by batch. Linears that
    read the same tensor (q, k, v) share one entry's storage.
    """
    seen: dict[str, list[torch.Tensor]] = defaultdict(list)
    modules = dict(block.named_modules())
    hooks = [modules[n].register_forward_pre_hook(lambda m, args, n=n: seen[n].append(args[0])) for n in names]
    hessians: dict[str, Hessian] = {}
    outputs = []
    try:
        for x in hidden:
            outputs.append(calibration_forward(block, x, positions, bf16))
            if keep:
                continue
            shared: dict[int, Hessian] = {}
            for n in names:
                x_in = seen.pop(n)[0]
                if n not in hessians:
                    hessians[n] = shared.get(id(x_in)) or Hessian(x_in.shape[-1])
                if id(x_in) not in shared:
                    shared[id(x_in)] = hessians[n]
                    hessians[n].add(x_in)
    finally:
        for h in hooks:
            h.remove()
    if not keep:
        return hessians, outputs
    inputs, by_batches = {}, {}
    for n in names:
        key = tuple(id(t) for t in seen[n])
        if key not in by_batches:
            by_batches[key] = torch.cat(seen[n]).float()
        inputs[n] = by_batches[key]
    return inputs, outputs


def install(block: nn.Module, linears: dict[str, nn.Linear], results: dict, grid: Grid, errors: list[float]) -> None:
    """Swap each linear for a QuantLinear holding its codes; record the relative weight error."""
    for name, lin in linears.items():
        codes, scales, zeros = results[name]
        q = QuantLinear.from_codes(codes, scales, zeros, grid, lin.bias)
        errors.append(float((q.dequantize() - lin.weight).norm() / lin.weight.norm().clamp(min=1e-12)))
        set_module(block, name, q)


def quantize_head(model: Transformer, grid: Grid) -> None:
    """RTN-quantize the output head; a tied embedding becomes the dequantized head."""
    weight = model.output_weight.detach()
    codes, scales, zeros = rtn(weight, grid)
    model.head = QuantLinear.from_codes(codes, scales, zeros, grid)
    tie_quantized_head(model)
