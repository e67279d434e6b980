"""GPTQ: one-shot weight quantization with second-order error compensation
(Frantar, Ashkboos, Hoefler & Alistarh, "GPTQ", arXiv 2210.17323).

Columns are quantized one at a time; the rounding error of each is spread over the
columns not yet quantized, weighted by the inverse Hessian H^-1 of the layer's
reconstruction loss (H = 2/n sum x x^T over calibration inputs), so the layer's output
error, not its weight error, is minimised. Lazy batch updates inside blocks of columns,
and the Cholesky factor of H^-1, follow the paper's Algorithm 1. Rows are independent
given H, so linears that read one input (q, k, v; gate, up) are quantized as one matrix.
"""

from __future__ import annotations

import torch

from lmforge.quant.grid import Grid, grid_params, round_codes

BLOCK = 128


class Hessian:
    """Running H = 2/n sum x x^T over the rows of every batch passed to `add`.

    Each batch's product is taken in float32 (one matrix product; its relative rounding
    error is about 1e-6, far below the damping) and summed across batches in float64.
    """

    def __init__(self, k: int):
        self.h = torch.zeros(k, k, dtype=torch.float64)
        self.n = 0

    def add(self, x: torch.Tensor) -> None:
        rows = x.reshape(-1, x.shape[-1]).float()
        m = rows.shape[0]
        self.h *= self.n / (self.n + m)
        self.n += m
        self.h += (rows.t() @ rows).double() * (2.0 / self.n)


def inverse_cholesky(h: torch.Tensor) -> torch.Tensor:
    """The upper Cholesky factor U of h^-1 (h^-1 = U^T U), from one Cholesky factorisation and one triangular solve.

    With J the order-reversing permutation, J h J = L L^T gives h^-1 = (J L^-1 J)^T (J L^-1 J),
    and J L^-1 J is upper triangular with a positive diagonal: the factor GPTQ needs, without
    forming h^-1 and factorising it again.
    """
    lower = torch.linalg.cholesky(h.flip(0, 1))
    eye = torch.eye(h.shape[0], dtype=h.dtype)
    return torch.linalg.solve_triangular(lower, eye, upper=False).flip(0, 1)


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
    scales = torch.zeros(n, grid.n_groups(k), dtype=torch.float32)
    zeros = torch.zeros_like(scales)
    static = act_order or grid.group_size is None
    if static:
        scales, zeros = grid_params(w, grid)
    perm = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(k)
    w, h = w[:, perm], h[perm][:, perm]
    h.diagonal().add_(damp * torch.diag(h).mean())
    hinv = inverse_cholesky(h)
    groups = (perm // group).tolist()
    codes = torch.zeros(n, k, dtype=torch.uint8)
    block = max(block // group, 1) * group if not static else block  # groups never straddle blocks
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        for j1 in range(0, i2 - i1, block if static else group):
            j2 = min(j1 + (block if static else group), i2 - i1)
            if not static:  # the group's range as the updates so far left it
                g = (i1 + j1) // group
                scales[:, g: g + 1], zeros[:, g: g + 1] = grid_params(w1[:, j1:j2], Grid(grid.bits, None, grid.symmetric))
            quantize_columns(w1, hinv1, range(j1, j2), groups[i1:i2], scales.double(), zeros.double(), grid.max_code,
                             codes[:, i1:i2], err1)
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return codes[:, torch.argsort(perm)], scales, zeros


def quantize_columns(w1: torch.Tensor, hinv1: torch.Tensor, columns: range, groups: list[int], scales: torch.Tensor,
                     zeros: torch.Tensor, max_code: int, codes: torch.Tensor, err1: torch.Tensor) -> None:
    """Quantize `columns` of the block w1 [N, B] in order, each column's scaled error folded into the block's
    later columns; writes their codes and scaled errors (for the lazy update of later blocks) in place."""
    for i in columns:
        s, z = scales[:, groups[i]], zeros[:, groups[i]]
        q = round_codes(w1[:, i], s, z, max_code)
        err = (w1[:, i] - (q.double() - z) * s) / hinv1[i, i]
        codes[:, i] = q
        w1[:, i:].addr_(err, hinv1[i, i:], alpha=-1)
        err1[:, i] = err
