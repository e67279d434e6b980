"""HQQ: calibration-free zero-point optimisation by half-quadratic splitting
(Badri & Shaji, "Half-Quadratic Quantization of Large Machine Learning Models", 2023).

The zero point of each group is chosen to minimise an l_p (p < 1) norm of the weight
error, which is robust to the outliers that dominate the min/max grid: alternate a
generalised soft-threshold of the error (the proximal step of |.|^p) with a closed-form
zero-point update, raising the penalty beta by kappa each step, and stop as soon as the
mean absolute error stops falling.
"""

from __future__ import annotations

import torch

from lmforge.quant.grid import Grid, expand_groups, group_reduce, grid_params, quantize, round_codes


def shrink_lp(x: torch.Tensor, beta: float, p: float) -> torch.Tensor:
    """Proximal operator of |x|^p / beta, the generalised soft-threshold sign(x) relu(|x| - |x|^(p-1) / beta)."""
    return torch.sign(x) * torch.relu(x.abs() - x.abs().clamp(min=1e-12).pow(p - 1) / beta)


def hqq(w: torch.Tensor, grid: Grid, p: float = 0.7, beta: float = 10.0, kappa: float = 1.01, iters: int = 20,
        early_stop: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes [N, K], scales and float zero points [N, G] of w on an asymmetric grid with HQQ-optimised zeros."""
    grid = Grid(grid.bits, grid.group_size, symmetric=False)  # the method optimises a zero point
    k = w.shape[1]
    group = grid.group_len(k)
    w = w.detach().float()
    scales, zeros = grid_params(w, grid)
    s = expand_groups(scales, group, k)
    best_zeros, best_error = zeros, float("inf")
    for _ in range(iters):
        z = expand_groups(zeros, group, k)
        codes = round_codes(w, s, z, grid.max_code).float()
        error = float((w - (codes - z) * s).abs().mean())
        if error < best_error:
            best_zeros, best_error = zeros, error
        elif early_stop:
            break
        w_e = shrink_lp(w - (codes - z) * s, beta, p)
        zeros = group_reduce(codes - (w - w_e) / s, group, torch.mean)
        beta *= kappa
    best_zeros = best_zeros.half().float()
    return quantize(w, scales, best_zeros, grid), scales, best_zeros
