"""`build_optimizer(model, cfg)`: split the parameters and build the one optimizer object."""

from __future__ import annotations

from torch import nn

from lmforge.config import TrainConfig
from lmforge.optim.hybrid import HybridOptimizer

GROUPS = ("matrix", "embedding", "gain")  # the parameter groups of every optimizer, in this order


def split_parameters(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The parameter groups every optimizer shares.

    "matrix": 2-D weight matrices inside the blocks (hidden layers); "embedding": other 2-D
    parameters (the embedding and output head); "gain": norm gains, biases and anything else
    that is not 2-D. Each trainable parameter lands in exactly one list.
    """
    groups: dict[str, list[nn.Parameter]] = {name: [] for name in GROUPS}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if p.dim() != 2:
            groups["gain"].append(p)
        elif name.startswith("layers."):
            groups["matrix"].append(p)
        else:
            groups["embedding"].append(p)
    return groups


def _matrix_group(cfg: TrainConfig, lr: float) -> dict:
    """Settings of the hidden matrices' group: AdamW's with "adamw", else the matrix optimizer's."""
    if cfg.optimizer == "adamw":
        return _adamw_group(cfg, lr, cfg.weight_decay)
    return {"kind": cfg.optimizer, "lr": lr, "weight_decay": cfg.weight_decay, "momentum": cfg.matrix_momentum,
            "beta2": cfg.matrix_beta2, "eps": cfg.matrix_eps, "scale": cfg.muon_scale, "clamp": cfg.namo_d_clamp,
            "ns_steps": cfg.ns_steps, "ns_bf16": cfg.precision != "fp32"}


def _adamw_group(cfg: TrainConfig, lr: float, weight_decay: float) -> dict:
    return {"kind": "adamw", "lr": lr, "betas": (cfg.beta1, cfg.beta2), "eps": 1e-8, "weight_decay": weight_decay}


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> HybridOptimizer:
    """One optimizer with the same three groups whatever `cfg.optimizer` is, so optimizers compare on equal terms.

    Hidden matrices at `cfg.matrix_rate`, updated by `cfg.optimizer` (AdamW included);
    embedding and head by AdamW at `lr` with weight decay; gains and biases by AdamW at `lr`
    without weight decay. Empty groups are dropped.
    """
    split = split_parameters(model)
    settings = {
        "matrix": _matrix_group(cfg, cfg.matrix_rate),
        "embedding": _adamw_group(cfg, cfg.lr, cfg.weight_decay),
        "gain": _adamw_group(cfg, cfg.lr, 0.0),
    }
    return HybridOptimizer([{"name": name, "params": split[name], **settings[name]} for name in GROUPS if split[name]])
