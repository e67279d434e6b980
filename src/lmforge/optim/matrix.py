"""Update rules of the matrix optimizers, one function per method, acting on one weight matrix.

Each rule updates its state in place, then returns (direction, scale) and the weight
decay factor: the parameter becomes p * decay - scale * direction, where `direction` is
the orthogonalised momentum (computed by the caller, possibly on another rank).

Under FSDP a rank holds some rows of each matrix: the rules then run on those rows, and
`total` adds up a partial sum over rows across the ranks that hold the others (the
identity for a whole matrix), so every rank computes the whole matrix's figures.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Total = Callable[[torch.Tensor], torch.Tensor]


def whole(partial: torch.Tensor) -> torch.Tensor:
    """`total` for a matrix held whole: its sums are already complete."""
    return partial


def muon_momentum(grad: torch.Tensor, state: dict, beta: float) -> torch.Tensor:
    """Muon's momentum M = beta M + (1 - beta) G and its Nesterov look-ahead lerp(G, M, beta), to orthogonalise."""
    buf = state.setdefault("momentum", torch.zeros_like(grad))
    buf.lerp_(grad, 1 - beta)
    return grad.lerp(buf, beta)


def muon_scale(shape: torch.Size, lr: float, mode: str) -> float:
    """Muon's step size for a [rows, cols] matrix (Jordan et al. 2024; Liu et al., arXiv 2502.16982).

    "original": lr * sqrt(max(1, rows / cols)); "match_rms_adamw": lr * 0.2 * sqrt(max(rows, cols)),
    which gives updates the RMS of AdamW's so Muon can reuse AdamW's learning rate.
    """
    rows, cols = shape
    if mode == "original":
        return lr * math.sqrt(max(1.0, rows / cols))
    if mode == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    raise ValueError(f"unknown Muon scale {mode!r}")


def namo_momentum(grad: torch.Tensor, state: dict, mu1: float, mu2: float, per_column: bool, total: Total = whole
                  ) -> torch.Tensor:
    """NAMO's moments (Zhang, Liu, Schaeffer, arXiv 2602.17080), returning the Nesterov momentum M~.

    M = mu1 M + (1 - mu1) G; v = mu2 v + (1 - mu2) ||G||_F^2 (one scalar per matrix), or for
    NAMO-D one second moment per column, V_j = mu2 V_j + (1 - mu2) ||G_:,j||^2;
    M~ = (1 - mu1) G + mu1 M.
    """
    m = state.setdefault("momentum", torch.zeros_like(grad))
    sq = grad.float().square()
    second = total(sq.sum(dim=0) if per_column else sq.sum())
    v = state.setdefault("second_moment", torch.zeros_like(second))
    state["step"] = state.get("step", 0) + 1
    m.lerp_(grad, 1 - mu1)
    v.lerp_(second, 1 - mu2)
    return torch.lerp(grad, m, mu1)


def namo_scale(
    nesterov: torch.Tensor, state: dict, lr: float, mu1: float, mu2: float, eps: float, clamp: float | None,
    shape: torch.Size | None = None, total: Total = whole,
) -> tuple[torch.Tensor | float, torch.Tensor | float]:
    """NAMO's adaptive step: (scale applied to the orthogonalised update, weight-decay step).

    NAMO: step = lr sqrt(1 - mu2^t) / (1 - mu1^t) ||M~||_F / (sqrt(v) + eps); the update scale is
    min(step * 0.2 sqrt(max(rows, cols)), 1) and the weight decay uses min(step, 1).
    NAMO-D (`clamp` = c): d_j = ||M~_:,j|| / (sqrt(V_j) + eps), clamped into [c mean(d), mean(d) / c];
    the same formulas per column. `shape`: the whole matrix's (default: nesterov's).
    """
    t = state["step"]
    rows, cols = shape if shape is not None else nesterov.shape
    correction = lr * math.sqrt(1 - mu2**t) / (1 - mu1**t)
    v = state["second_moment"]
    if clamp is None:
        step = correction * float(total(nesterov.float().square().sum()).sqrt() / (v.sqrt() + eps))
        return min(step * 0.2 * math.sqrt(max(rows, cols)), 1.0), min(step, 1.0)
    d = total(nesterov.float().square().sum(dim=0)).sqrt() / (v.sqrt() + eps)
    mean = d.mean()
    d = torch.minimum(torch.maximum(d, clamp * mean), mean / clamp)
    step = correction * d
    return (step * 0.2 * math.sqrt(max(rows, cols))).clamp(max=1.0), step.clamp(max=1.0)
