"""Learning-rate schedules as multipliers of the peak learning rate."""

from __future__ import annotations

import math

from lmforge.config import TrainConfig


def lr_multiplier(step: int, cfg: TrainConfig) -> float:
    """Multiplier of `cfg.lr` at optimizer step `step` (0-based).

    "wsd": linear warmup, constant, then a linear decay to `min_lr_ratio` over the last
    `decay_fraction` of the steps (Hu et al., MiniCPM, arXiv 2404.06395; Hägele et al.,
    arXiv 2405.18392). "cosine": linear warmup then a half cosine to `min_lr_ratio`.
    """
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    floor = cfg.min_lr_ratio
    if cfg.schedule == "wsd":
        decay_steps = max(1, round(cfg.decay_fraction * cfg.steps))
        decay_start = cfg.steps - decay_steps
        if step < decay_start:
            return 1.0
        progress = min(1.0, (step - decay_start + 1) / decay_steps)
        return 1.0 - (1.0 - floor) * progress
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps + 1) / span)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
