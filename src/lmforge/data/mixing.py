"""Domain mixing: how many times each training document appears in the output.

Given the bytes of text available per domain, a strategy picks each domain's share of the
output, and the share becomes an epoch count per domain (how many passes over its
documents), capped so that small domains are repeated at most `max_epochs` times:
- "natural": the domains' own proportions (every domain one epoch);
- "weights": user weights per domain;
- "temperature": p_d proportional to n_d^(1/T) (T > 1 flattens toward uniform; Arivazhagan
  et al., "Massively Multilingual Neural Machine Translation in the Wild", 2019);
- "unimax": a uniform budget per domain, domains that run out of documents at
  `max_epochs` epochs give their remainder to the others (Chung et al., "UniMax: Fairer
  and More Effective Language Sampling for Large-Scale Multilingual Pretraining", ICLR 2023).
Fractional epochs take a deterministic subset of a domain's documents by a seeded hash
of their ids, so the same inputs and seed give the same output on any executor.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from lmforge.config import bounded
from lmforge.errors import ConfigError

STRATEGIES = ("natural", "weights", "temperature", "unimax")


@dataclass
class MixConfig:
    """Domain mixing of the training split (validation is never resampled)."""

    strategy: str = "natural"  # natural | weights | temperature | unimax
    weights: dict[str, float] = bounded(low=0, default_factory=dict)  # strategy "weights": share per domain
    temperature: float = bounded(1.0, 0, low_open=True)  # strategy "temperature": p_d ~ n_d^(1/T)
    max_epochs: float = bounded(4.0, 0, low_open=True)  # cap on repeats of any domain (upsampling limit)
    budget_bytes: int = bounded(0, 0)  # bytes of training text to produce; 0: as many as the input has

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"mix.strategy={self.strategy!r} is not one of {', '.join(STRATEGIES)}")


def _target_shares(cfg: MixConfig, sizes: dict[str, int]) -> dict[str, float]:
    total = sum(sizes.values())
    if cfg.strategy == "natural":
        return {d: n / total for d, n in sizes.items()}
    if cfg.strategy == "weights":
        missing = sorted(set(sizes) - set(cfg.weights))
        if missing:
            raise ConfigError(f"mix.weights has no weight for domain(s) {', '.join(missing)}; add them (0 drops a domain)")
        norm = sum(cfg.weights[d] for d in sizes)
        if norm <= 0:
            raise ConfigError("mix.weights of the present domains sum to 0")
        return {d: cfg.weights[d] / norm for d in sizes}
    if cfg.strategy == "temperature":
        scaled = {d: n ** (1 / cfg.temperature) for d, n in sizes.items()}
        norm = sum(scaled.values())
        return {d: s / norm for d, s in scaled.items()}
    return {}


def _unimax_epochs(sizes: dict[str, int], budget: float, max_epochs: float) -> dict[str, float]:
    """UniMax: walk domains from smallest to largest, each taking an equal split of the budget
    left, capped at max_epochs of its own size."""
    epochs = {}
    remaining = budget
    order = sorted(sizes, key=lambda d: (sizes[d], d))
    for i, d in enumerate(order):
        share = remaining / (len(order) - i)
        take = min(share, max_epochs * sizes[d])
        epochs[d] = take / sizes[d]
        remaining -= take
    return epochs


def plan_epochs(cfg: MixConfig, sizes: dict[str, int]) -> dict[str, float]:
    """Epochs per domain (output bytes / input bytes), given input bytes per domain."""
    sizes = {d: n for d, n in sizes.items() if n > 0}
    if not sizes:
        return {}
    if cfg.strategy == "natural" and not cfg.budget_bytes:
        return dict.fromkeys(sizes, 1.0)  # exactly one pass, free of rounding
    budget = cfg.budget_bytes or sum(sizes.values())
    if cfg.strategy == "unimax":
        return _unimax_epochs(sizes, budget, cfg.max_epochs)
    shares = _target_shares(cfg, sizes)
    return {d: min(shares[d] * budget / sizes[d], cfg.max_epochs) for d in sizes}


def _unit_hash(doc_id: str, seed: int) -> float:
    digest = hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def repeats(doc_id: str, epochs: float, seed: int) -> int:
    """How many copies of this document the output gets: floor(epochs), plus one more for a
    seeded-hash-chosen fraction of the documents equal to the fractional part."""
    whole = math.floor(epochs)
    return whole + (1 if _unit_hash(doc_id, seed) < epochs - whole else 0)
