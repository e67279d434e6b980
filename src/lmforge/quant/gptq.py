"""GPTQ: one-shot weight quantization with second-order error compensation
(Frantar, Ashkboos, Hoefler & Alistarh, "GPTQ", arXiv 2210.17323).

Columns are quantized one at a time; the rounding error of each is spread over the
columns not yet quantized, weighted by the inverse Hessian H^-1 of the layer's
reconstruction loss (H = 2/n sum x x^T over calibration inputs), so the layer's output
error, not its weight error, is minimised. Lazy batch updates inside blocks of columns,
and the Cholesky factor of H^-1, follow the paper's Algorithm 1.
"""

from __future__ import annotations

import torch

from lmforge.quant.grid import Grid, grid_params, round_codes

BLOCK = 128


class Hessian:
    """Running H = 2/n sum x x^T over the rows of every batch passed to `add` (float64)."""

    def __init__(self, k: int):
        self.h = torch.zeros(k, k, dtype=torch.float64)
        self.n = 0

    def add(self, x: torch.Tensor) -> None:
        rows = x.reshape(-1, x.shape[-1]).double()
        m = rows.shape[0]
        self.h *= self.n / (self.n + m)
        self.n += m
        rows = rows * (2.0 / self.n) ** 0.5
        self.h += rows.t() @ rows


def gptq(w: torch.Tensor, h: torch.Tensor, grid: Grid, damp: float = 0.01, act_order: bool = False,
         block: int = BLOCK) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize w [N, K] given the Hessian h [K, K] of its inputs; returns codes [N, K], scales, zeros [N, G].

    Dead inputs (zero diagonal) get zero weight; the Hessian is damped by `damp` times its
    mean diagonal. Group parameters are computed from the error-updated weights when the
    quantizer reaches each group's first column. With `act_order` columns go in order of
    decreasing Hessian diagonal and the groups keep their original columns ("static
    groups"), their parameters taken from the weights before any update.
    """
    n, k = w.shape
    group = grid.group_len(k)
    w = w.detach().double().clone()
    h = h.double().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    n_groups = grid.n_groups(k)
    scales = torch.zeros(n, n_groups, dtype=torch.float32)
    zeros = torch.zeros_like(scales)
    per_channel = grid.group_size is None
    if act_order or per_channel:
        scales, zeros = grid_params(w, grid)
    perm = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(k)
    w, h = w[:, perm], h[perm][:, perm]
    h.diagonal().add_(damp * torch.diag(h).mean())
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    codes = torch.zeros(n, k, dtype=torch.uint8)
    block = max(block // group, 1) * group if not per_channel else block  # groups never straddle blocks
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            g = int(perm[col]) // group
            if not act_order and not per_channel and col % group == 0:
                s_new, z_new = grid_params(w1[:, i:i + group], Grid(grid.bits, None, grid.symmetric))
                scales[:, g], zeros[:, g] = s_new[:, 0], z_new[:, 0]
            s, z = scales[:, g].double(), zeros[:, g].double()
            q = round_codes(w1[:, i], s, z, grid.max_code)
            err = (w1[:, i] - (q.double() - z) * s) / hinv1[i, i]
            codes[:, col] = q
            w1[:, i:] -= err[:, None] * hinv1[i, i:][None, :]
            err1[:, i] = err
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return codes[:, torch.argsort(perm)], scales, zeros
