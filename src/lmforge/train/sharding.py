"""FSDP2 for training: parameters, gradients and optimizer state split over the ranks, checkpoints whole.

`shard_model` applies PyTorch's `fully_shard` (FSDP2; Zhao et al., "PyTorch FSDP", arXiv 2304.11277) to every
block and then to the model, over all ranks: each rank keeps torch.chunk's share of every parameter's rows,
each block's parameters are gathered for its forward and backward and freed after, and the gradients are
reduce-scattered (averaged, as DDP averages them). The optimizer works on each rank's rows (`optim.hybrid`).

Checkpoints stay in the one-process format, so a run saved on N ranks resumes on M, on one process, or under
DDP: `full_weights` and `full_optimizer_state` gather the shards (every rank takes part; the whole tensors are
used on rank 0), and `keep_own_rows` cuts a loaded whole state back to this rank's rows.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from lmforge.model.transformer import Transformer
from lmforge.optim.hybrid import local, row_shards


def shard_model(model: Transformer, device: torch.device) -> Transformer:
    """`model`, its blocks and then the rest sharded over every rank of the launch (in place)."""
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for block in model.layers:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def full_weights(model: Transformer) -> dict[str, torch.Tensor]:
    """The whole model's tensors on the CPU, named as in `model.state_dict()` (a collective; rank 0's are whole)."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _parameters(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def _is_rows_of(value, p: torch.Tensor) -> bool:
    return isinstance(p, DTensor) and torch.is_tensor(value) and value.shape == local(p).shape


def full_optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """`optimizer.state_dict()` with every state tensor that holds a sharded parameter's rows gathered whole
    (a collective over the ranks, in the same order on each)."""
    saved = optimizer.state_dict()
    params = _parameters(optimizer)
    gathered = {}
    for index, state in saved["state"].items():
        p = params[index]
        gathered[index] = {
            key: DTensor.from_local(value, p.device_mesh, p.placements, shape=p.shape, stride=p.stride()).full_tensor()
            if _is_rows_of(value, p) else value
            for key, value in state.items()
        }
    return {**saved, "state": gathered}


def keep_own_rows(optimizer: torch.optim.Optimizer) -> None:
    """After loading a whole (one-process) optimizer state: keep only this rank's rows of each sharded
    parameter's state tensors."""
    for p in _parameters(optimizer):
        shards = row_shards(p)
        if shards is None:
            continue
        counts, rank = shards.counts(), dist.get_rank(shards.group)
        start = sum(counts[:rank])
        state = optimizer.state[p]
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == p.shape:
                state[key] = value[start : start + counts[rank]].clone()
