"""One optimizer object for a whole model: AdamW groups beside matrix-optimizer groups.

Each parameter group names its `kind` ("adamw", "muon", "namo" or "namo_d") and carries
its own learning rate, so a learning-rate scheduler scales every part by the same ratio
and `state_dict` / `load_state_dict` round-trip the whole optimizer (exact resume).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor
from torch.optim.adamw import adamw

from lmforge.optim.matrix import Total, muon_momentum, muon_scale, namo_momentum, namo_scale, whole
from lmforge.optim.orthogonalize import RowShards, orthogonalize_all

MATRIX_KINDS = ("muon", "namo", "namo_d")


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of a parameter or gradient: its shard under FSDP, else the tensor itself. The optimizer
    state is kept in the same local form."""
    return t.to_local() if isinstance(t, DTensor) else t


def row_shards(p: torch.Tensor) -> RowShards | None:
    """How FSDP splits matrix `p` over ranks (None for a matrix held whole)."""
    if not isinstance(p, DTensor):
        return None
    return RowShards(p.device_mesh.get_group(), p.shape[0])


def over_ranks(shards: RowShards | None) -> Total:
    """`total` for a matrix of `shards`: partial sums over its rows added up across the ranks holding them."""
    if shards is None:
        return whole

    def total(partial: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(partial, group=shards.group)
        return partial

    return total


def _layout(groups: list[dict]) -> list[tuple[str | None, str | None, int]]:
    """(name, kind, number of parameters) of each group."""
    return [(g.get("name"), g.get("kind"), len(g["params"])) for g in groups]


def _describe(layout: list[tuple[str | None, str | None, int]]) -> str:
    return ", ".join(f"{name or 'unnamed'} ({kind}, {n} tensors)" for name, kind, n in layout)


class HybridOptimizer(torch.optim.Optimizer):
    """AdamW (Loshchilov & Hutter, arXiv 1711.05101) for "adamw" groups; Muon, NAMO or NAMO-D
    for groups of 2-D hidden matrices, whose orthogonalisation is shared out across ranks
    when torch.distributed is initialised."""

    def __init__(self, param_groups: list[dict]):
        for group in param_groups:
            if group.get("kind") not in ("adamw", *MATRIX_KINDS):
                raise ValueError(f"parameter group kind must be adamw or one of {MATRIX_KINDS}, got {group.get('kind')!r}")
            if group["kind"] != "adamw" and any(p.dim() != 2 for p in group["params"]):
                raise ValueError(f"{group['kind']} groups take only 2-D matrices")
        super().__init__(param_groups, defaults={})

    def layout_difference(self, state: dict) -> str | None:
        """How the parameter groups of a saved `state_dict` differ from this optimizer's (None if they match).

        Resuming across layouts would mismatch the per-parameter state (or silently switch the
        update rule, since loading restores each group's settings), so the caller refuses it.
        """
        saved, mine = _layout(state["param_groups"]), _layout(self.param_groups)
        if saved == mine:
            return None
        return f"its optimizer has parameter groups {_describe(saved)}, this run builds {_describe(mine)}"

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        jobs = []
        for group in self.param_groups:
            if group["kind"] == "adamw":
                self._adamw_step(group)
                continue
            for p in group["params"]:
                if p.grad is None:
                    continue
                state, grad, shards = self.state[p], local(p.grad), row_shards(p)
                if group["kind"] == "muon":
                    momentum = muon_momentum(grad, state, group["momentum"])
                else:
                    momentum = namo_momentum(grad, state, group["momentum"], group["beta2"], group["kind"] == "namo_d",
                                             over_ranks(shards))
                jobs.append((p, group, momentum, shards))
        if jobs:
            steps, bf16 = jobs[0][1]["ns_steps"], jobs[0][1].get("ns_bf16", True)  # saved before the key: bf16
            directions = orthogonalize_all([m for _, _, m, _ in jobs], steps, [s for _, _, _, s in jobs], bf16)
            for (p, group, momentum, shards), direction in zip(jobs, directions):
                self._apply(p, group, momentum, direction, shards)
        return loss

    def _apply(self, p: torch.Tensor, group: dict, momentum: torch.Tensor, direction: torch.Tensor,
               shards: RowShards | None) -> None:
        lr, wd, weight = group["lr"], group["weight_decay"], local(p)
        if group["kind"] == "muon":
            weight.mul_(1 - lr * wd)
            weight.add_(direction, alpha=-muon_scale(p.shape, lr, group["scale"]))
            return
        clamp = group["clamp"] if group["kind"] == "namo_d" else None
        scale, decay_step = namo_scale(momentum, self.state[p], lr, group["momentum"], group["beta2"], group["eps"], clamp,
                                       p.shape, over_ranks(shards))
        weight.mul_(1 - wd * decay_step)
        weight.sub_(direction * scale)

    def _adamw_step(self, group: dict) -> None:
        params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            state, weight = self.state[p], local(p)
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=weight.device)
                state["exp_avg"] = torch.zeros_like(weight, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(weight, memory_format=torch.preserve_format)
            params.append(weight)
            grads.append(local(p.grad))
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        if not params:
            return
        fused = all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float16, torch.bfloat16) for p in params)
        beta1, beta2 = group["betas"]
        adamw(params, grads, exp_avgs, exp_avg_sqs, [], steps, foreach=None if fused else True, fused=fused or None,
              amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"],
              eps=group["eps"], maximize=False)
