"""Rotary position embeddings (Su et al., "RoFormer", arXiv 2104.09864).

The half-split layout (pairs (i, i + d/2)) used by Hugging Face Llama checkpoints, so
their q/k weights load unchanged.
"""

from __future__ import annotations

import torch


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of position * theta^(-2i/d), shaped [B, 1, T, head_dim] to broadcast over heads.

    Angles are computed in fp32 (fp64 for fp64 inputs), whatever the compute dtype.
    """
    work = torch.float64 if dtype == torch.float64 else torch.float32
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=work) / head_dim)
    angles = positions.to(work)[..., None] * inv_freq  # [B, T, d/2]
    cos, sin = angles.cos(), angles.sin()
    return torch.cat((cos, cos), -1)[:, None].to(dtype), torch.cat((sin, sin), -1)[:, None].to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each (x_i, x_{i+d/2}) pair of x [B, H, T, d] by its position's angle."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin
