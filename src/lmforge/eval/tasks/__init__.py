"""Synthetic reasoning tasks with exact verifiers: seeded generators of problems whose written solutions end in
"Answer: <integer>", split into train and test by a hash of the problem, so no test instance is ever trained on.

Tasks: `arithmetic` (a chain of +, -, * steps, written as an expression or, with style "words", as a story),
`tracing` (what a short generated Python function returns), `equations` (a linear equation in one unknown).
"""

from __future__ import annotations

import random
import re
import zlib
from dataclasses import asdict, dataclass
from typing import Callable

SPLITS = ("train", "test")
TEST_SHARE = 5  # one problem in 5 (by hash) belongs to the test split
ANSWER = re.compile(r"Answer:\s*(-?\d+)")


@dataclass(frozen=True)
class Problem:
    """One instance: what the model is asked, a worked solution ending in the answer line, and the answer."""

    task: str
    prompt: str
    solution: str
    answer: int

    def to_dict(self) -> dict:
        return asdict(self)


Generator = Callable[[random.Random, int], Problem]  # (rng, difficulty) -> problem


def split_of(problem: Problem) -> str:
    """The split a problem belongs to, from a hash of its prompt: the same problem is always in the same split."""
    return "test" if zlib.crc32(f"{problem.task}\n{problem.prompt}".encode("utf-8")) % TEST_SHARE == 0 else "train"


def extract_answer(text: str) -> int | None:
    """The integer of the last "Answer: N" line of a generated text, or None when it gives none."""
    found = ANSWER.findall(text)
    return int(found[-1]) if found else None


def is_correct(problem: Problem, text: str) -> bool:
    """Whether a generated solution's final answer is the problem's answer."""
    return extract_answer(text) == problem.answer


def generators() -> dict[str, Generator]:
    from lmforge.eval.tasks.arithmetic import arithmetic, arithmetic_words
    from lmforge.eval.tasks.equations import equation
    from lmforge.eval.tasks.tracing import tracing

    return {"arithmetic": arithmetic, "arithmetic-words": arithmetic_words, "tracing": tracing, "equations": equation}


def generate(task: str, split: str, n: int, seed: int = 0, difficulty: int = 3) -> list[Problem]:
    """`n` distinct problems of `task` from `split`, deterministic for the seed."""
    tasks = generators()
    if task not in tasks:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(tasks)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose train or test")
    rng = random.Random(f"{task}/{split}/{seed}/{difficulty}")
    problems, seen = [], set()
    for _ in range(20 * n + 1000):  # draws: enough unless the task has too few distinct problems
        if len(problems) == n:
            return problems
        p = tasks[task](rng, difficulty)
        if p.prompt not in seen and split_of(p) == split:
            seen.add(p.prompt)
            problems.append(p)
    raise ValueError(f"{task} at difficulty {difficulty} has fewer than {n} distinct {split} problems; ask for fewer")
