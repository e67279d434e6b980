"""AWQ: activation-aware weight quantization (Lin, Tang, Tang et al., "AWQ", arXiv 2306.00978).

Weights that meet large activations matter most. For each group of linears sharing an
input, scale their input columns by s = mean|x|^ratio (normalised by sqrt(max s * min s)),
with the ratio picked from a grid to minimise the output error of the quantized block,
and fold 1/s into whatever produces that input (the RMSNorm gain or the previous
linear's rows), so the float model computes exactly the same function. Then search,
per output channel and group, how far to shrink the grid's range (clipping), by the
same output error. Llama's groups: attention norm -> q, k, v; v -> o (when the shapes
match, i.e. no grouped KV heads); MLP norm -> gate, up; up -> down. q and k are not
clipped (attention scores are sensitive to them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.quant.grid import Grid, fake_quantize

N_GRID = 20
MAX_SHRINK = 0.5
CLIP_TOKENS = 512


@dataclass
class ScaleGroup:
    """Linears that read one input, the module producing it, and the function whose output error is judged."""

    prev: nn.Module  # RMSNorm or nn.Linear whose output feeds `linears`
    linears: list[str]  # names inside the block
    inspect: Callable[[torch.Tensor], torch.Tensor] | None  # None: the one linear's own output is judged


def llama_scale_groups(block: nn.Module, positions: torch.Tensor) -> list[ScaleGroup]:
    """AWQ's scaling groups of one block; attention groups only when the mixer has q/k/v/o projections."""
    groups = []
    mixer = block.mixer
    if all(hasattr(mixer, name) for name in ("q_proj", "k_proj", "v_proj", "o_proj")):
        groups.append(ScaleGroup(block.mixer_norm, ["mixer.q_proj", "mixer.k_proj", "mixer.v_proj"],
                                 lambda x: mixer(x, positions[: x.shape[0], : x.shape[1]], None)))
        if mixer.v_proj.out_features == mixer.o_proj.in_features:
            groups.append(ScaleGroup(mixer.v_proj, ["mixer.o_proj"], None))
    mlp = block.mlp
    groups.append(ScaleGroup(block.mlp_norm, ["mlp.gate_proj", "mlp.up_proj"], mlp))
    groups.append(ScaleGroup(mlp.up_proj, ["mlp.down_proj"], None))
    return groups


@torch.no_grad()
def search_scales(x: torch.Tensor, linears: list[nn.Linear], inspect: Callable | None, grid: Grid,
                  mean_abs: torch.Tensor, bf16: bool = False) -> torch.Tensor:
    """The input-column scales s [K] minimising the error of `inspect(x)` with linears quantized as (W s) / s.

    With `inspect` None the group is one linear judged by its own output, through `linear_output_loss`.
    With `bf16` every `inspect` (the reference and each candidate alike) runs its products in bf16.
    """
    originals = [lin.weight.detach().clone() for lin in linears]
    loss_of = linear_output_loss(x, originals[0]) if inspect is None else module_output_loss(x, linears, inspect, bf16)
    best, best_loss = torch.ones_like(mean_abs), float("inf")
    try:
        for step in range(N_GRID):
            s = mean_abs.pow(step / N_GRID).clamp(min=1e-4)
            s = s / (s.max() * s.min()).sqrt()
            loss = loss_of([fake_quantize(w * s, grid) / s for w in originals])
            if loss < best_loss:
                best, best_loss = s, loss
    finally:
        for lin, w in zip(linears, originals):
            lin.weight.copy_(w)
    return best


def module_output_loss(x: torch.Tensor, linears: list[nn.Linear], inspect: Callable,
                       bf16: bool) -> Callable[[list[torch.Tensor]], float]:
    """Mean squared change of `inspect(x)` when the linears take the given weights (the caller restores them)."""
    def judged() -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            return inspect(x).to(x.dtype)

    reference = judged()

    def loss(weights: list[torch.Tensor]) -> float:
        for lin, w in zip(linears, weights):
            lin.weight.copy_(w)
        return float((judged() - reference).pow(2).mean())
    return loss


def linear_output_loss(x: torch.Tensor, w: torch.Tensor) -> Callable[[list[torch.Tensor]], float]:
    """Mean squared change of one linear's output x W^T when W takes the given weight.

    The change is x E^T with E the weight's change, whose mean square is tr(E H E^T) / (n N) with H = x^T x:
    H is formed once, so each candidate costs an N x K x K product instead of a pass over the n inputs
    (a fifth of the work for SmolLM2's down projection on 8,192 tokens).
    """
    rows = x.reshape(-1, x.shape[-1])
    grams = input_grams(rows, rows.shape[1])
    norm = 1 / (rows.shape[0] * w.shape[0])
    return lambda weights: float(quadratic_errors(weights[0] - w, grams).sum()) * norm


def input_grams(x: torch.Tensor, group: int) -> torch.Tensor:
    """x_g^T x_g for each group of `group` input columns of x [n, K] (zero-padded to whole groups): [G, group, group]."""
    xg = F.pad(x, (0, -x.shape[1] % group)).reshape(x.shape[0], -1, group).transpose(0, 1)  # [G, n, group]
    return xg.transpose(1, 2) @ xg


def quadratic_errors(e: torch.Tensor, grams: torch.Tensor) -> torch.Tensor:
    """Squared output change summed over the tokens, per output row and input group, [N, G]: e_g H_g e_g^T for
    a weight change e [N, K] and the inputs' per-group Gram matrices H [G, group, group] (`input_grams`)."""
    n_groups, group, _ = grams.shape
    eg = F.pad(e, (0, n_groups * group - e.shape[1])).reshape(e.shape[0], n_groups, group).transpose(0, 1)
    return (torch.bmm(eg, grams) * eg).sum(-1).t()


@torch.no_grad()
def fold_scales(prev: nn.Module, linears: list[nn.Linear], s: torch.Tensor) -> None:
    """Divide prev's output by s and multiply the linears' input columns by s: the float function is unchanged."""
    if isinstance(prev, nn.Linear):
        prev.weight.div_(s[:, None])
        if prev.bias is not None:
            prev.bias.div_(s)
    else:  # RMSNorm: its gain scales each output channel
        prev.weight.div_(s)
    for lin in linears:
        lin.weight.mul_(s[None, :])


@torch.no_grad()
def search_clip(w: torch.Tensor, x: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Per (output channel, group) range shrink factors [N, G] minimising the group's output error on inputs x [n, K].

    Each group's error on the sampled tokens is a quadratic form of its weight change in that group's
    input Gram matrix (`quadratic_errors`), so a candidate costs N K group products, not n N K.
    """
    k = w.shape[1]
    dtype = torch.promote_types(x.dtype, torch.float32)
    x = x.reshape(-1, k)
    x = x[:: max(1, x.shape[0] // CLIP_TOKENS)][:CLIP_TOKENS].to(dtype)
    w = w.to(dtype)
    grams = input_grams(x, grid.group_len(k))
    best = torch.ones(w.shape[0], grid.n_groups(k))
    best_err = torch.full(best.shape, float("inf"), dtype=dtype)
    for step in range(int(MAX_SHRINK * N_GRID)):
        shrink = 1 - step / N_GRID
        err = quadratic_errors(fake_quantize(w, grid, shrink) - w, grams)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best[better] = shrink
    return best


@torch.no_grad()
def awq_block(block: nn.Module, inputs: dict[str, torch.Tensor], positions: torch.Tensor, grid: Grid,
              search_rows: int, bf16: bool = False) -> dict[str, torch.Tensor]:
    """Scale (folded into the block) and clip one block's linears; returns each linear's range shrink [N, G].

    `inputs` maps linear names to their calibration inputs [n, T, K] (updated in place for
    the folded scales); the scale search judges the first `search_rows` sequences (in bf16 with `bf16`).
    """
    groups = llama_scale_groups(block, positions)
    modules = dict(block.named_modules())
    chosen = []
    for g in groups:
        x = inputs[g.linears[0]]
        mean_abs = x.reshape(-1, x.shape[-1]).abs().float().mean(0)
        chosen.append(search_scales(x[:search_rows], [modules[n] for n in g.linears], g.inspect, grid, mean_abs, bf16))
    for g, s in zip(groups, chosen):  # every search saw the float block; now fold them all
        fold_scales(g.prev, [modules[n] for n in g.linears], s)
        for name in g.linears:
            inputs[name] = inputs[name] / s
    shrinks = {}
    for name, x in inputs.items():
        if name.endswith(("q_proj", "k_proj")):
            continue
        shrinks[name] = search_clip(modules[name].weight, x, grid)
    return shrinks
