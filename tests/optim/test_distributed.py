"""Gloo processes share the Newton-Schulz work, on whole matrices (DDP) or on the rows FSDP gives each rank,
and end with the parameters of one process."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import tiny_model

from lmforge.config import TrainConfig
from lmforge.optim.build import build_optimizer
from lmforge.train.sharding import full_weights, shard_model


def _run(optimizer: str, steps: int = 3, fsdp: bool = False) -> dict:
    # float64: a sharded product sums in another order than the whole one, and in float32 that rounding, small as
    # it is, moves AdamW's normalised step on near-zero gradients by more than a tight tolerance allows
    model = tiny_model(64, n_layers=3).double()
    if fsdp:
        shard_model(model, torch.device("cpu"))
    opt = build_optimizer(model, TrainConfig(optimizer=optimizer, lr=3e-3))
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):  # every rank sees the same batch, as gradients are after an all-reduce
        x = torch.randint(0, 64, (2, 16), generator=g)
        model(x, targets=x.roll(-1, 1)).backward()
        opt.step()
        opt.zero_grad()
    return full_weights(model) if fsdp else {k: v.clone() for k, v in model.state_dict().items()}


def _worker(rank: int, world: int, port: int, optimizer: str, out: str, fsdp: bool = False) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        state = _run(optimizer, fsdp=fsdp)
        if rank == 0 or not fsdp:  # FSDP gathers the whole weights on rank 0
            torch.save(state, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each worker, so matrix products round the same way
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("optimizer", ["muon"])  # NAMO-D shares its Newton-Schulz the same way (see the FSDP test)
def test_two_ranks_equal_one(tmp_path, optimizer, one_thread):
    single = _run(optimizer)
    mp.spawn(_worker, args=(2, _free_port(), optimizer, str(tmp_path / "state")), nprocs=2, join=True)
    for rank in range(2):
        shared = torch.load(tmp_path / f"state.{rank}")
        for k, v in single.items():
            torch.testing.assert_close(shared[k], v, rtol=1e-6, atol=1e-7, msg=lambda m, k=k: f"{k}: {m}")


def test_rows_split_over_three_ranks_equal_one(tmp_path, one_thread):
    """FSDP over 3 ranks splits most matrices unevenly; each matrix is orthogonalised whole on its owner, and
    NAMO-D's column norms add up the ranks' rows."""
    single = _run("namo_d")
    mp.spawn(_worker, args=(3, _free_port(), "namo_d", str(tmp_path / "state"), True), nprocs=3, join=True)
    shared = torch.load(tmp_path / "state.0")
    for k, v in single.items():
        torch.testing.assert_close(shared[k], v, rtol=1e-6, atol=1e-7, msg=lambda m, k=k: f"{k}: {m}")
