"""Seeded task generation over the families: the same seed, split and count give the same tasks anywhere.

Splits: "train" and "test" draw from separate random streams per family and index, so test instances
are unseen instances of the same families; whole families can be left out of training (`exclude`) and
generated for testing alone, which measures transfer to families never trained on.
"""

from __future__ import annotations

import random

from lmforge.data.terminal.families import FAMILIES
from lmforge.data.terminal.task import TerminalTask
from lmforge.errors import ConfigError

SPLITS = ("train", "test")


def choose_families(names: list[str] | None = None, exclude: list[str] | None = None) -> list[str]:
    """Family names to generate from (all by default), minus `exclude`; unknown names are an error."""
    chosen = list(names) if names else sorted(FAMILIES)
    unknown = sorted(set(chosen + list(exclude or [])) - set(FAMILIES))
    if unknown:
        raise ConfigError(f"unknown task families {', '.join(unknown)}; choose from {', '.join(sorted(FAMILIES))}")
    chosen = [name for name in chosen if name not in set(exclude or [])]
    if not chosen:
        raise ConfigError("no task family is left to generate from; exclude fewer families")
    return chosen


def generate_tasks(count: int, seed: int = 0, split: str = "train", families: list[str] | None = None) -> list[TerminalTask]:
    """`count` tasks, cycling over `families` (names; all by default), instance i of a family drawn from its own stream."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    names = choose_families(families)
    tasks = []
    for i in range(count):
        family = FAMILIES[names[i % len(names)]]
        index = i // len(names)
        rng = random.Random(f"{split}/{seed}/{family.name}/{index}")
        tasks.append(family.build(rng, f"{family.name}-{split}-{seed}-{index:05d}"))
    return tasks
