"""Synthetic reasoning tasks: every worked solution is right by an independent computation, and splits never meet."""

import re

import pytest

from lmforge.eval.tasks import Problem, extract_answer, generate, generators, is_correct, split_of

TASKS = list(generators())


def independent_answer(p: Problem) -> int:
    """The answer computed without the generator's own arithmetic."""
    if p.task == "arithmetic":
        expr = p.prompt.removeprefix("Compute ").removesuffix(".")
        assert re.fullmatch(r"[\d+\-* ()]+", expr)
        return eval(expr)  # an expression of digits and operators the test has just checked
    if p.task == "tracing":
        scope: dict = {}
        exec(p.prompt.split("\n\n", 1)[1], scope)  # a function the generator wrote, not outside input
        return scope["f"](int(re.match(r"What does f\((\d+)\)", p.prompt).group(1)))
    if p.task == "equations":
        a, sign, b, c = re.fullmatch(r"Solve for x: (\d+)x ([+-]) (\d+) = (-?\d+)\.", p.prompt).groups()
        x = (int(c) - (int(b) if sign == "+" else -int(b))) / int(a)
        assert x == int(x)
        return int(x)
    start = int(re.search(r"has (\d+)", p.prompt).group(1))
    for verb, n in re.findall(r"(gets|gives away|ends up with) (\d+)", p.prompt):
        start = start + int(n) if verb == "gets" else start - int(n) if verb == "gives away" else start * int(n)
    return start


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("difficulty", [1, 3, 5])
def test_solutions_are_right_and_verified(task, difficulty):
    for split in ("train", "test"):
        for p in generate(task, split, 60, seed=1, difficulty=difficulty):
            assert p.answer == independent_answer(p), p
            assert is_correct(p, p.solution)
            assert not is_correct(p, p.solution.replace(f"Answer: {p.answer}", f"Answer: {p.answer + 1}"))
            assert split_of(p) == split


@pytest.mark.parametrize("task", TASKS)
def test_splits_are_disjoint_and_seeded(task):
    train = generate(task, "train", 300, seed=0)
    test = generate(task, "test", 100, seed=0)
    assert not {p.prompt for p in train} & {p.prompt for p in test}
    assert len({p.prompt for p in train}) == 300
    assert generate(task, "test", 100, seed=0) == test
    assert generate(task, "test", 100, seed=1) != test


def test_the_last_answer_line_counts():
    assert extract_answer("Answer: 3\nno, wait\nAnswer: -12") == -12
    assert extract_answer("the answer is 4") is None
    assert extract_answer("Answer:7 and more") == 7


def test_unknown_task_and_split_are_refused():
    with pytest.raises(ValueError, match="unknown task"):
        generate("chess", "train", 1)
    with pytest.raises(ValueError, match="unknown split"):
        generate("arithmetic", "dev", 1)
    with pytest.raises(ValueError, match="fewer than"):
        generate("equations", "test", 500, difficulty=1)
