"""Training on several ranks under torchrun: joining the process group, which rank does what, and the few
collectives the trainer needs beside the model's own.

torchrun starts one process per rank with RANK, WORLD_SIZE, LOCAL_RANK and MASTER_ADDR/PORT in its environment;
`init_world` joins them (gloo on CPU, nccl on GPU). One process started without torchrun is a world of one, so
the trainer has one code path: every collective below returns at once there.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from lmforge.errors import ConfigError
from lmforge.ops.sequence_parallel import SequenceShard


@dataclass(frozen=True)
class World:
    """This process's rank among `size` ranks (0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs, metrics, plots, progress and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Each value summed over the ranks (float64, so sums of losses do not round)."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def mean(self, value: float) -> float:
        """`value` averaged over the ranks."""
        return self.sum([value])[0] / self.size

    def max(self, value: int) -> int:
        """The largest of the ranks' values."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t)

    def any(self, flag: bool) -> bool:
        """Whether any rank raised `flag` (a Ctrl-C seen by one rank stops them all at the same step)."""
        return self.sum([float(flag)])[0] > 0


def launched_ranks() -> int:
    """How many ranks torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_world(device: torch.device) -> tuple[World, torch.device]:
    """Join torchrun's process group when there is one; the world and this rank's device (its own GPU)."""
    if launched_ranks() <= 1:
        return World(), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size()), device


def sequence_shard(world: World, cp: int, stage_heads: int = 0) -> SequenceShard | None:
    """This rank's context-parallel group: ranks are laid out dp x cp, so each run of cp consecutive ranks shares
    the same rows and splits their tokens (None without context parallelism); attention runs in stages of
    `stage_heads` heads (0: all at once)."""
    if cp == 1:
        return None
    mine = None
    for first in range(0, world.size, cp):  # every rank creates every group, in the same order
        group = dist.new_group(list(range(first, first + cp)))
        if first <= world.rank < first + cp:
            mine = group
    return SequenceShard(mine, world.rank % cp, cp, stage_heads)


def close_world(world: World) -> None:
    """Leave the process group (a no-op for one process)."""
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def first_difference(a, b, path: str = "") -> str | None:
    """The dotted key where two nested dicts first differ (None when equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            found = first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else key)
            if found:
                return found
        return None
    return None if a == b else path


def check_same_config(world: World, config: dict) -> None:
    """Refuse to start when the ranks were launched with different configs (they would train different models
    and hang in the first collective that disagrees): names the first key that differs from rank 0's."""
    if not world.distributed:
        return
    configs: list[dict | None] = [None] * world.size
    dist.all_gather_object(configs, json.loads(json.dumps(config)))
    for rank, other in enumerate(configs):
        key = first_difference(configs[0], other)
        if key:
            raise ConfigError(f"rank {rank} was launched with a different config than rank 0 ({key}); give every "
                              "rank the same config file and overrides")
