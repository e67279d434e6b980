"""Orthogonalise many update matrices at once: batched by shape, shared out across ranks.

Same-shaped matrices are stacked and run through one batched Newton-Schulz iteration.
Under torch.distributed with W ranks, each rank orthogonalises about 1/W of every stack
and the results are all-gathered (the layout of Muon's reference implementation), so the
cost of Newton-Schulz does not repeat on every rank.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from lmforge.device import bf16_supported
from lmforge.ops.newton_schulz import newton_schulz5


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def orthogonalize_all(matrices: list[torch.Tensor], steps: int = 5) -> list[torch.Tensor]:
    """newton_schulz5 of every matrix, in input order: in bf16 where the device supports it, except that
    float64 matrices stay float64 (a caller asking for float64 wants the exact iteration, as the tests do)."""
    out: list[torch.Tensor | None] = [None] * len(matrices)
    by_shape: dict[tuple, list[int]] = {}
    for i, m in enumerate(matrices):
        by_shape.setdefault((tuple(m.shape), m.device, m.dtype), []).append(i)
    rank, world = _world()
    for (shape, device, dtype), indices in by_shape.items():
        compute = torch.bfloat16 if bf16_supported(device) and dtype != torch.float64 else None
        stack = torch.stack([matrices[i] for i in indices])
        if world == 1:
            result = newton_schulz5(stack, steps, compute_dtype=compute)
        else:
            per_rank = -(-len(indices) // world)
            padded = torch.cat([stack, stack.new_zeros(per_rank * world - len(indices), *shape)])
            mine = newton_schulz5(padded[rank * per_rank : (rank + 1) * per_rank].contiguous(), steps, compute_dtype=compute)
            gathered = [torch.empty_like(mine) for _ in range(world)]
            dist.all_gather(gathered, mine)
            result = torch.cat(gathered)[: len(indices)]
        for j, i in enumerate(indices):
            out[i] = result[j]
    return out
