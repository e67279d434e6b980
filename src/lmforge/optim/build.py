"""`build_optimizer(model, cfg)`: split the parameters and build the one optimizer object."""

from __future__ import annotations

from torch import nn

from lmforge.config import TrainConfig
from lmforge.optim.hybrid import HybridOptimizer


def split_parameters(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Which parameters a matrix optimizer may take.

    "matrix": 2-D weight matrices inside the blocks (hidden layers); "decay": other 2-D
    parameters (the embedding and output head); "no_decay": norm gains, biases and
    anything else that is not 2-D. Each trainable parameter lands in exactly one list.
    """
    groups: dict[str, list[nn.Parameter]] = {"matrix": [], "decay": [], "no_decay": []}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if p.dim() != 2:
            groups["no_decay"].append(p)
        elif name.startswith("layers."):
            groups["matrix"].append(p)
        else:
            groups["decay"].append(p)
    return groups


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> HybridOptimizer:
    """AdamW for everything ("adamw"), or the matrix optimizer for hidden matrices plus AdamW for the rest."""
    split = split_parameters(model)
    adamw = {"kind": "adamw", "lr": cfg.lr, "betas": (cfg.beta1, cfg.beta2), "eps": 1e-8}
    matrices = split["matrix"]
    groups = [
        {"params": split["decay"] + (matrices if cfg.optimizer == "adamw" else []), "weight_decay": cfg.weight_decay, **adamw},
        {"params": split["no_decay"], "weight_decay": 0.0, **adamw},
    ]
    if cfg.optimizer != "adamw":
        groups.append({
            "params": matrices,
            "kind": cfg.optimizer,
            "lr": cfg.matrix_lr if cfg.matrix_lr is not None else cfg.lr,
            "weight_decay": cfg.weight_decay,
            "momentum": cfg.matrix_momentum,
            "beta2": cfg.matrix_beta2,
            "eps": cfg.matrix_eps,
            "scale": cfg.muon_scale,
            "clamp": cfg.namo_d_clamp,
            "ns_steps": cfg.ns_steps,
        })
    return HybridOptimizer([g for g in groups if g["params"]])
