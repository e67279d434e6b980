"""`lmforge distill`: turn a dense checkpoint into one with other mixers (e.g. sparse attention)
by training the new model to match the old one.

Following SpargeAttention2 (arXiv 2602.13515), the student is the same model with the chosen
layers' mixer replaced, initialised from the dense weights; the teacher is a frozen copy of
the dense model. The language-model analogue of the paper's velocity distillation is
KL(teacher || student) on next-token distributions, optionally plus the mean squared error
between the two models' residual streams after every block.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from lmforge.checkpoint import load_checkpoint
from lmforge.config import run_config_from_dict, to_dict
from lmforge.device import resolve_device
from lmforge.errors import ConfigError
from lmforge.model.mixers import mixer_names
from lmforge.model.transformer import Transformer, matmul_dtype
from lmforge.ops.cross_entropy import linear_kl_divergence
from lmforge.train.trainer import TrainResult, next_token_loss, train


def student_mixers(n_layers: int, current: list[str], mixer: str, layers: list[int] | None) -> list[str]:
    """Per-layer mixer names with `mixer` in `layers` (default: every layer)."""
    if mixer not in mixer_names():
        raise ConfigError(f"unknown mixer {mixer!r}; known mixers: {', '.join(mixer_names())}")
    chosen = set(range(n_layers)) if layers is None else set(layers)
    bad = sorted(i for i in chosen if not 0 <= i < n_layers)
    if bad:
        raise ConfigError(f"layer {bad[0]} does not exist; the model has layers 0..{n_layers - 1}")
    return [mixer if i in chosen else current[i % len(current)] for i in range(n_layers)]


def distillation_objective(teacher: Transformer, mse_weight: float = 0.0):
    """Loss = KL(teacher || student) per token (+ mse_weight x mean per-block residual MSE)."""

    def objective(student: Transformer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            theirs = teacher.hidden_states(x)
        ours = student.hidden_states(x)
        s_final, t_final = student.norm(ours[-1]), teacher.norm(theirs[-1])
        loss = linear_kl_divergence(s_final.flatten(0, 1), student.output_weight, t_final.flatten(0, 1),
                                    teacher.output_weight, compute_dtype=matmul_dtype(s_final))
        if mse_weight:
            loss = loss + mse_weight * torch.stack([F.mse_loss(a.float(), b.float()) for a, b in zip(ours[1:], theirs[1:])]).mean()
        return loss

    return objective


def distill(
    checkpoint: str | Path,
    out: str | Path,
    mixer: str = "sparse",
    layers: list[int] | None = None,
    loss: str = "kl",
    mse_weight: float = 0.0,
    overrides: list[str] | None = None,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Fine-tune a copy of `checkpoint` with `mixer` in `layers`, by distillation ("kl") or plainly ("ce")."""
    if loss not in ("kl", "ce"):
        raise ConfigError(f"distillation loss must be 'kl' or 'ce', got {loss!r}")
    dense = load_checkpoint(checkpoint)
    raw = to_dict(dense.config)
    raw["model"]["mixers"] = student_mixers(dense.config.model.n_layers, dense.config.model.mixers, mixer, layers)
    raw["train"]["out"] = str(out)
    raw["train"]["time_budget"] = 0.0  # a fine-tune runs its steps, whatever budget trained the teacher
    if not raw["data"]["dir"]:  # keep reading the teacher's prepared data
        raw["data"]["dir"] = str(dense.config.data_dir())
    cfg = run_config_from_dict(raw, overrides)
    teacher = dense.model.to(resolve_device(cfg.train.device)).eval().requires_grad_(False)
    objective = distillation_objective(teacher, mse_weight) if loss == "kl" else next_token_loss
    return train(cfg, resume=resume, overwrite=not resume, progress=progress, init_from=dense.path, objective=objective)
