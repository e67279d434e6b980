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
PLAIN_FORMAT = "Problem: {prompt}\nSolution:\n"  # how a model trained on the tasks is asked
CORPUS_DIFFICULTIES = (1, 2, 3, 4)  # the built-in "reasoning" corpus mixes these
CORPUS_PER_TASK = 4000  # problems per task and difficulty in the built-in corpus
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


def training_text(problem: Problem) -> str:
    """A problem as a model trained on the tasks reads it: the plain format, then the worked solution."""
    return PLAIN_FORMAT.format(prompt=problem.prompt) + problem.solution


def read_reasoning():
    """The built-in corpus "reasoning": train-split problems of every task at several difficulties, each a
    document in the plain format with its worked solution (the test split never appears)."""
    from lmforge.data.document import Document

    for task in generators():
        for difficulty in CORPUS_DIFFICULTIES:
            for i, p in enumerate(generate(task, "train", CORPUS_PER_TASK, 0, difficulty, at_most=True)):
                yield Document(training_text(p), f"{task}/{difficulty}/{i}")


def generators() -> dict[str, Generator]:
    from lmforge.eval.tasks.arithmetic import arithmetic, arithmetic_words
    from lmforge.eval.tasks.equations import equation
    from lmforge.eval.tasks.tracing import tracing

    return {"arithmetic": arithmetic, "arithmetic-words": arithmetic_words, "tracing": tracing, "equations": equation}


def generate(task: str, split: str, n: int, seed: int = 0, difficulty: int = 3, at_most: bool = False) -> list[Problem]:
    """`n` distinct problems of `task` from `split`, deterministic for the seed (with `at_most`, as many as the
    task has up to `n`; else fewer is an error)."""
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
    if at_most:
        return problems
    raise ValueError(f"{task} at difficulty {difficulty} has fewer than {n} distinct {split} problems; ask for fewer")
