"""Seeded task families, one module per domain: each composes skills of its domain into tasks with
parametrised input files, a prompt that does not give the solution away, weighted tests, a reference
solution and a broken one. `FAMILIES` maps a family's name to its declaration."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from lmforge.data.terminal.task import TerminalTask
from lmforge.data.terminal.taxonomy import check_skills


@dataclass(frozen=True)
class Family:
    """A task family: `build(rng, task_id)` draws one instance; the same rng state gives the same task."""

    name: str
    domain: str
    skills: tuple[str, ...]
    build: Callable[[random.Random, str], TerminalTask]

    def __post_init__(self) -> None:
        check_skills(self.domain, self.skills)


def _registry() -> dict[str, Family]:
    from lmforge.data.terminal.families import (
        data_processing,
        data_querying,
        data_science,
        debugging,
        dependency_management,
        file_operations,
        scientific_computing,
        security,
        software_engineering,
    )

    modules = (data_processing, data_querying, data_science, debugging, dependency_management, file_operations,
               scientific_computing, security, software_engineering)
    return {family.name: family for module in modules for family in module.FAMILIES}


FAMILIES: dict[str, Family] = _registry()
