"""The task families: each is registered under its module's domain with that domain's skills, builds the
same task from the same seed and different tasks from different seeds, and its verifier is sound (the
reference solution scores 1, the broken one less) when run in the sandbox."""

from __future__ import annotations

import ast
import importlib
import os
import random
import re
import sys

import pytest

from lmforge.data.terminal import sandbox
from lmforge.data.terminal.families import FAMILIES
from lmforge.data.terminal.taxonomy import DOMAINS, check_skills
from lmforge.data.terminal.verify import check_task

NAMES = sorted(FAMILIES)


def _build(name: str, seed: int):
    return FAMILIES[name].build(random.Random(seed), f"{name}-{seed}")


def test_every_domain_module_registers_families_of_its_own_domain():
    for domain in DOMAINS:
        module = importlib.import_module(f"lmforge.data.terminal.families.{domain}")
        assert module.FAMILIES, domain
        for family in module.FAMILIES:
            assert family.domain == domain and FAMILIES[family.name] is family
            assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)+", family.name)
            check_skills(family.domain, family.skills)


@pytest.mark.parametrize("name", NAMES)
def test_build_is_deterministic_and_varies_with_the_seed(name):
    task = _build(name, 7)
    assert task.to_dict() == _build(name, 7).to_dict()
    assert task.to_dict() != FAMILIES[name].build(random.Random(8), f"{name}-7").to_dict()
    assert (task.id, task.family, task.domain, task.skills) == (f"{name}-7", name, FAMILIES[name].domain,
                                                                FAMILIES[name].skills)


@pytest.mark.parametrize("name", NAMES)
def test_tasks_are_small_self_contained_and_partially_creditable(name):
    task = _build(name, 3)
    assert "current directory" in task.instruction
    assert sum(len(text) for text in task.files.values()) < 50_000
    assert len(task.weights) >= 3 and task.broken and task.solution != task.broken
    tree = ast.parse(task.tests)
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= set(sys.stdlib_module_names) | {"pytest"}, imported


@pytest.mark.skipif(not sandbox.available() and os.geteuid() != 0,
                    reason="bubblewrap is not installed (apt-get install bubblewrap)")
@pytest.mark.parametrize("name", NAMES)
def test_reference_solution_passes_and_broken_solution_fails(name):
    check = check_task(_build(name, 11))
    assert check.reference_score == 1.0, check.reference_output
    assert check.broken_score < 1.0
