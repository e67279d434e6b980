"""One optimizer object for a whole model: AdamW groups beside matrix-optimizer groups.

Each parameter group names its `kind` ("adamw", "muon", "namo" or "namo_d") and carries
its own learning rate, so a learning-rate scheduler scales every part by the same ratio
and `state_dict` / `load_state_dict` round-trip the whole optimizer (exact resume).
"""

from __future__ import annotations

import torch
from torch.optim.adamw import adamw

from lmforge.optim.matrix import muon_momentum, muon_scale, namo_momentum, namo_scale
from lmforge.optim.orthogonalize import orthogonalize_all

MATRIX_KINDS = ("muon", "namo", "namo_d")


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
                state = self.state[p]
                if group["kind"] == "muon":
                    momentum = muon_momentum(p.grad, state, group["momentum"])
                else:
                    momentum = namo_momentum(p.grad, state, group["momentum"], group["beta2"], group["kind"] == "namo_d")
                jobs.append((p, group, momentum))
        if jobs:
            steps = jobs[0][1]["ns_steps"]
            directions = orthogonalize_all([m for _, _, m in jobs], steps)
            for (p, group, momentum), direction in zip(jobs, directions):
                self._apply(p, group, momentum, direction)
        return loss

    def _apply(self, p: torch.Tensor, group: dict, momentum: torch.Tensor, direction: torch.Tensor) -> None:
        lr, wd = group["lr"], group["weight_decay"]
        if group["kind"] == "muon":
            p.mul_(1 - lr * wd)
            p.add_(direction, alpha=-muon_scale(p.shape, lr, group["scale"]))
            return
        clamp = group["clamp"] if group["kind"] == "namo_d" else None
        scale, decay_step = namo_scale(momentum, self.state[p], lr, group["momentum"], group["beta2"], group["eps"], clamp)
        p.mul_(1 - wd * decay_step)
        p.sub_(direction * scale)

    def _adamw_step(self, group: dict) -> None:
        params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(p.grad)
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
