"""Building blocks shared by every layer: RMSNorm and the SwiGLU MLP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square layer norm with a learned gain (Zhang & Sennrich, arXiv 1910.07467)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def fuse_linears(layers: list[nn.Module]) -> nn.Module | None:
    """One module computing the outputs of `layers` (same input) side by side, so an inference step
    runs one larger matrix product instead of several small ones; None when they cannot be joined.

    The layers keep their weights as views of the fused module's, so nothing is stored twice and
    checkpoints still hold the separate layers. Quantized layers join through their own `concat`.
    The fused module is for inference only: gradients would reach it, not the layers.
    """
    kind = type(layers[0])
    if any(type(m) is not kind for m in layers):
        return None
    if kind is not nn.Linear:
        return kind.concat(layers) if hasattr(kind, "concat") else None
    first = layers[0]
    if any((m.bias is None) != (first.bias is None) for m in layers):
        return None
    fused = nn.Linear(first.in_features, sum(m.out_features for m in layers), bias=first.bias is not None,
                      device=first.weight.device, dtype=first.weight.dtype).requires_grad_(False)
    at = 0
    with torch.no_grad():
        for m in layers:
            rows = slice(at, at + m.out_features)
            for name in ("weight", "bias"):
                if getattr(m, name) is not None:
                    getattr(fused, name)[rows] = getattr(m, name)
                    setattr(m, name, nn.Parameter(getattr(fused, name)[rows], requires_grad=getattr(m, name).requires_grad))
            at += m.out_features
    return fused


class SwiGLU(nn.Module):
    """Gated MLP down(silu(gate(x)) * up(x)) (Shazeer, "GLU Variants", arXiv 2002.05202)."""

    _gate_up: nn.Module | None = None  # set by `fuse_projections`; not a registered submodule

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def fuse_projections(self) -> list[nn.Module]:
        """For inference: gate and up as one matrix product (see `fuse_linears`); returns the fused module."""
        object.__setattr__(self, "_gate_up", fuse_linears([self.gate_proj, self.up_proj]))
        return [self._gate_up] if self._gate_up is not None else []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._gate_up is not None and not torch.is_grad_enabled():
            gate, up = self._gate_up(x).chunk(2, dim=-1)
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(F.silu(gate) * up)
