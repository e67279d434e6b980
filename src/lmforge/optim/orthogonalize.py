"""Orthogonalise many update matrices at once: batched by shape, shared out across ranks.

Same-shaped matrices are stacked and run through one batched Newton-Schulz iteration.
Under torch.distributed with W ranks, each rank orthogonalises about 1/W of every stack
and the results are all-gathered (the layout of Muon's reference implementation), so the
cost of Newton-Schulz does not repeat on every rank.

Under FSDP each rank holds only some rows of every matrix (`RowShards`). Then each matrix
has an owner rank: one all-to-all brings every matrix's rows to its owner, the owner
orthogonalises the whole matrices it owns, and a second all-to-all returns each rank its
rows of every result. Each matrix crosses the network twice, whole matrices exist only on
their owners, and no rank repeats another's Newton-Schulz.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from lmforge.device import bf16_supported
from lmforge.ops.newton_schulz import newton_schulz5


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@dataclass(frozen=True)
class RowShards:
    """How a matrix of `rows` rows is split over the ranks of `group`: rank i holds the i-th of torch.chunk's
    pieces along the rows (FSDP2's layout; the last pieces may be shorter or empty)."""

    group: dist.ProcessGroup
    rows: int

    def counts(self) -> list[int]:
        """Rows held by each rank of the group."""
        size = dist.get_world_size(self.group)
        piece = -(-self.rows // size)
        return [max(0, min(piece, self.rows - i * piece)) for i in range(size)]


def _compute_dtype(device: torch.device, dtype: torch.dtype, bf16: bool) -> torch.dtype | None:
    return torch.bfloat16 if bf16 and bf16_supported(device) and dtype != torch.float64 else None


def _orthogonalize_row_shards(pieces: list[torch.Tensor], shards: RowShards, steps: int, bf16: bool) -> list[torch.Tensor]:
    """newton_schulz5 of matrices of which this rank holds rows `pieces` (same layout and width): each
    matrix is gathered on one owner rank, orthogonalised there, and its rows sent back."""
    size, rank = dist.get_world_size(shards.group), dist.get_rank(shards.group)
    counts = shards.counts()
    piece, cols, n = max(counts), pieces[0].shape[-1], len(pieces)
    per_owner = -(-n // size)
    send = pieces[0].new_zeros(size * per_owner, piece, cols)  # matrix j goes to owner j // per_owner
    send[:n, : counts[rank]] = torch.stack(pieces)
    received = torch.empty_like(send)
    dist.all_to_all_single(received, send, group=shards.group)
    received = received.view(size, per_owner, piece, cols)  # [sender, my matrices, its rows]
    whole = torch.cat([received[s, :, : counts[s]] for s in range(size)], dim=1)
    result = newton_schulz5(whole, steps, compute_dtype=_compute_dtype(whole.device, whole.dtype, bf16)).to(whole.dtype)
    starts = [sum(counts[:s]) for s in range(size)]
    back = torch.zeros_like(received)
    for s in range(size):
        back[s, :, : counts[s]] = result[:, starts[s] : starts[s] + counts[s]]
    mine = torch.empty_like(send)
    dist.all_to_all_single(mine, back.view_as(send), group=shards.group)
    return list(mine[:n, : counts[rank]].unbind(0))


def orthogonalize_all(matrices: list[torch.Tensor], steps: int = 5, shards: list[RowShards | None] | None = None,
                      bf16: bool = True) -> list[torch.Tensor]:
    """newton_schulz5 of every matrix, in input order: with `bf16`, in bf16 where the device supports it, except
    that float64 matrices stay float64 (a caller asking for float64 wants the exact iteration, as the tests do);
    without it (a run with train.precision=fp32), in the matrices' own dtype.
    `shards[i]`, where given, says matrices[i] is this rank's rows of a matrix split over ranks; its result
    is this rank's rows of the orthogonalised matrix."""
    out: list[torch.Tensor | None] = [None] * len(matrices)
    shards = shards or [None] * len(matrices)
    by_shape: dict[tuple, list[int]] = {}
    for i, m in enumerate(matrices):
        layout = (shards[i].group, shards[i].rows) if shards[i] is not None else None
        # a split matrix's rows on this rank follow from its layout; its other ranks group it the same way
        by_shape.setdefault((tuple(m.shape[1:] if layout else m.shape), layout, m.device, m.dtype), []).append(i)
    rank, world = _world()
    for (_, layout, device, dtype), indices in by_shape.items():
        if layout is not None:
            for i, result in zip(indices, _orthogonalize_row_shards([matrices[i] for i in indices], shards[indices[0]], steps,
                                                                    bf16)):
                out[i] = result
            continue
        compute = _compute_dtype(device, dtype, bf16)
        stack = torch.stack([matrices[i] for i in indices])
        shape = stack.shape[1:]
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
