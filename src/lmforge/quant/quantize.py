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

from lmforge.model.transformer import Transformer
from lmforge.quant.awq import awq_block
from lmforge.quant.gptq import Hessian, gptq
from lmforge.quant.grid import Grid, QuantizationError, grid_params, quantize, rtn
from lmforge.quant.hqq import hqq
from lmforge.quant.layout import is_quantized, set_module, tie_quantized_head
from lmforge.quant.linear import QuantLinear

METHODS = ("rtn", "gptq", "awq", "hqq")
CALIBRATED = ("gptq", "awq")
BATCH_SEQS = 8  # calibration sequences per forward pass


@dataclass
class QuantSpec:
    """What to quantize to: method, bit width, group length (None: per output channel), head precision."""

    method: str = "gptq"
    bits: int = 4
    group_size: int | None = 128
    head_bits: int = 8  # 0 keeps the output head (and a tied embedding) in float
    act_order: bool = True  # GPTQ: columns by decreasing Hessian diagonal, static groups (measured: better)
    damp: float = 0.01  # GPTQ: damping as a fraction of the mean Hessian diagonal
    awq_search_seqs: int = 16  # AWQ: calibration sequences the scale search is judged on

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise QuantizationError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.head_bits not in (0, 4, 8):
            raise QuantizationError(f"head bits must be 0 (float), 4 or 8, got {self.head_bits}")
        self.grid  # validates bits and group size

    @property
    def grid(self) -> Grid:
        """int8: symmetric (per channel unless grouped); int4: asymmetric groups."""
        return Grid(self.bits, self.group_size, symmetric=self.bits == 8)

    def head_grid(self) -> Grid:
        return Grid(8, None, symmetric=True) if self.head_bits == 8 else Grid(4, self.group_size or 128)

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
    for block in tqdm(model.layers, desc=f"{spec.method} int{spec.bits}", unit="block", disable=not progress):
        hidden = quantize_block(block, spec, hidden, positions, errors)
    if spec.head_bits:
        quantize_head(model, spec.head_grid())
    model.train(was_training)
    return {"seconds": time.perf_counter() - start, "mean_relative_weight_error": sum(errors) / max(len(errors), 1)}


def quantize_block(block: nn.Module, spec: QuantSpec, hidden: list[torch.Tensor] | None, positions: torch.Tensor | None,
                   errors: list[float]) -> list[torch.Tensor] | None:
    """Quantize one block's linears; returns the next block's calibration inputs (None without calibration)."""
    linears = block_linears(block)
    grid = spec.grid
    results: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    if spec.method in ("rtn", "hqq"):
        for name, lin in linears.items():
            results[name] = rtn(lin.weight, grid) if spec.method == "rtn" else hqq(lin.weight, grid)
        install(block, linears, results, grid if spec.method == "rtn" else Grid(grid.bits, grid.group_size), errors)
        return None
    inputs, outputs = capture_inputs(block, list(linears), hidden, positions, keep=spec.method == "awq")
    if spec.method == "gptq":
        for name, lin in linears.items():
            results[name] = gptq(lin.weight, inputs[name].h, grid, spec.damp, spec.act_order)
        install(block, linears, results, grid, errors)
        return [block(x, positions[: x.shape[0]], None) for x in hidden]  # inputs to the next block, quantized so far
    shrinks = awq_block(block, inputs, positions, grid, spec.awq_search_seqs)
    for name, lin in linears.items():
        scales, zeros = grid_params(lin.weight, grid, shrinks.get(name, 1.0))
        results[name] = quantize(lin.weight, scales, zeros, grid), scales, zeros
    install(block, linears, results, grid, errors)
    return outputs


def capture_inputs(block: nn.Module, names: list[str], hidden: list[torch.Tensor], positions: torch.Tensor,
                   keep: bool) -> tuple[dict, list[torch.Tensor]]:
    """Run the float block over the calibration batches, recording each linear's inputs.

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
            outputs.append(block(x, positions[: x.shape[0]], None))
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
            by_batches[key] = torch.cat(seen[n])
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
