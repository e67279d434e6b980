"""Bit packing of 4-bit codes: two per byte, the even column in the low nibble."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """Codes [N, K] in 0..15 (uint8) -> bytes [N, ceil(K / 2)]; an odd K is padded with a zero code."""
    if codes.shape[-1] % 2:
        codes = F.pad(codes, (0, 1))
    low, high = codes[..., 0::2], codes[..., 1::2]
    return (low | (high << 4)).to(torch.uint8)


def unpack_int4(packed: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of `pack_int4`: bytes [N, ceil(K / 2)] -> codes [N, K] (uint8)."""
    codes = torch.stack([packed & 0x0F, packed >> 4], dim=-1).reshape(*packed.shape[:-1], -1)
    return codes[..., :k]
