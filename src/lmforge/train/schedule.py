"""Learning-rate schedules as multipliers of the peak learning rate."""

from __future__ import annotations

import math

from lmforge.config import TrainConfig


def lr_multiplier(step: int, cfg: TrainConfig, elapsed: float = 0.0) -> float:
    """Multiplier of `cfg.lr` at optimizer step `step` (0-based), `elapsed` training seconds into the run.

    The run's progress is the share of `cfg.steps` done after this step, or, when `cfg.time_budget`
    is set, the share of that budget spent: a run given a budget of seconds decays on time, as in
    Cramming (Geiping and Goldstein, arXiv 2212.14034), so it ends annealed on any machine.
    "wsd": linear warmup, constant, then a linear decay to `min_lr_ratio` over the last
    `decay_fraction` of the run (Hu et al., MiniCPM, arXiv 2404.06395; Hägele et al.,
    arXiv 2405.18392). "cosine": linear warmup then a half cosine to `min_lr_ratio`.
    """
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    floor = cfg.min_lr_ratio
    done = elapsed / cfg.time_budget if cfg.time_budget else (step + 1) / cfg.steps
    if cfg.schedule == "wsd":
        hold = 1.0 - cfg.decay_fraction
        progress = min(1.0, max(0.0, done - hold) / cfg.decay_fraction) if cfg.decay_fraction else 0.0
        return 1.0 - (1.0 - floor) * progress
    warm = 0.0 if cfg.time_budget else cfg.warmup_steps / cfg.steps
    progress = min(1.0, max(0.0, done - warm) / max(1.0 - warm, 1e-12))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
