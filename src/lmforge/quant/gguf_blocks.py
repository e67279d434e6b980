"""Quantized weights as GGUF blocks (llama.cpp's Q8_0, Q4_0, Q4_1), written from lmforge's codes when the
grids coincide, so llama.cpp runs exactly the weights lmforge chose.

GGUF blocks hold 32 consecutive weights of a row with float16 parameters:
Q8_0 x = d q (q int8), Q4_0 x = d (q - 8), Q4_1 x = d q + m (q in 0..15); in the 4-bit
blocks byte j holds q[j] in its low nibble and q[j + 16] in its high one. An lmforge
group that is a multiple of 32 columns maps onto whole blocks: d = s, m = -z s (m is
rounded to float16, the only loss). Grids that do not map (int8 with a zero point,
Q4_0 from codes whose zero is not 8, rows not a multiple of 32) are dequantized and
re-quantized by the `gguf` package instead.
"""

from __future__ import annotations

import numpy as np
import torch

from lmforge.quant.grid import expand_groups
from lmforge.quant.linear import QuantLinear

BLOCK = 32
BLOCK_TYPES = ("q8_0", "q4_0", "q4_1")


def exact_blocks(layer: QuantLinear, qtype: str) -> bool:
    """Whether `layer`'s codes can be written as `qtype` blocks without re-quantizing."""
    k, grid = layer.in_features, layer.grid
    if k % BLOCK or grid.group_len(k) % BLOCK:
        return False
    if qtype == "q8_0":
        return grid.bits == 8 and bool((layer.zeros == 128).all())
    if qtype == "q4_0":
        return grid.bits == 4 and bool((layer.zeros == 8).all())
    return qtype == "q4_1" and grid.bits == 4


def to_blocks(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group: int, qtype: str) -> np.ndarray:
    """GGUF block bytes [N, K / 32 * block bytes] of codes [N, K] with group parameters [N, G] (see `exact_blocks`)."""
    n, k = codes.shape
    per_block = lambda p: expand_groups(p.float(), group, k)[:, ::BLOCK].reshape(n, k // BLOCK, 1)  # noqa: E731
    s, z = per_block(scales), per_block(zeros)
    q = codes.reshape(n, k // BLOCK, BLOCK).to(torch.int16)
    d = s.half().numpy().view(np.uint8)
    if qtype == "q8_0":
        payload = (q - 128).to(torch.int8).numpy().view(np.uint8)
        return np.concatenate([d, payload], axis=-1).reshape(n, -1)
    nibbles = (q[..., :16] | (q[..., 16:] << 4)).to(torch.uint8).numpy()
    if qtype == "q4_0":
        return np.concatenate([d, nibbles], axis=-1).reshape(n, -1)
    m = (-z * s).half().numpy().view(np.uint8)
    return np.concatenate([d, m, nibbles], axis=-1).reshape(n, -1)


_BLOCK_BYTES = {"q8_0": 34, "q4_0": 18, "q4_1": 20}


def from_blocks(data: np.ndarray, qtype: str) -> torch.Tensor:
    """fp32 weights [N, K] from GGUF block bytes [N, K / 32 * block bytes] (the inverse of `to_blocks`);
    vectorised over the whole tensor, where the `gguf` package's reference loops over row groups."""
    n = data.shape[0]
    b = torch.from_numpy(np.array(data)).reshape(n, -1, _BLOCK_BYTES[qtype])
    d = b[..., 0:2].contiguous().view(torch.float16).float()
    if qtype == "q8_0":
        return (d * b[..., 2:].contiguous().view(torch.int8).float()).reshape(n, -1)
    nibbles = b[..., -16:]
    q = torch.cat([nibbles & 15, nibbles >> 4], dim=-1).float()
    if qtype == "q4_0":
        return (d * (q - 8)).reshape(n, -1)
    m = b[..., 2:4].contiguous().view(torch.float16).float()
    return (d * q + m).reshape(n, -1)
