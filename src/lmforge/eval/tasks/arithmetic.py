"""Multi-step arithmetic with a written chain of thought: one line per operation, then the answer."""

from __future__ import annotations

import random

from lmforge.eval.tasks import Problem

WORDS = {"+": "gets {n} more", "-": "gives away {n}", "*": "ends up with {n} times as many"}
NAMES = ("Ana", "Ben", "Chen", "Dara", "Eli", "Farah", "Gus", "Hana")
THINGS = ("apples", "marbles", "stamps", "coins", "shells", "cards")


def steps(rng: random.Random, n_steps: int) -> tuple[int, list[tuple[str, int, int]]]:
    """A start value and `n_steps` operations (op, operand, result), every intermediate result in 0..999."""
    value = start = rng.randint(1, 20)
    ops = []
    for _ in range(n_steps):
        op = rng.choice("+-*")
        if op == "*" and value * 2 > 999 or op == "-" and value < 2:
            op = "+"
        operand = rng.randint(2, 9) if op == "*" else rng.randint(1, value if op == "-" else 20)
        value = value + operand if op == "+" else value - operand if op == "-" else value * operand
        ops.append((op, operand, value))
    return start, ops


def worked(start: int, ops: list[tuple[str, int, int]]) -> str:
    lines, value = [], start
    for op, operand, result in ops:
        lines.append(f"{value} {op} {operand} = {result}")
        value = result
    return "\n".join(lines + [f"Answer: {value}"])


def arithmetic(rng: random.Random, difficulty: int) -> Problem:
    """An expression of `difficulty` operations, left to right as the brackets say."""
    start, ops = steps(rng, difficulty)
    expr = str(start)
    for i, (op, operand, _) in enumerate(ops):
        expr = f"({expr} {op} {operand})" if i < len(ops) - 1 else f"{expr} {op} {operand}"
    return Problem("arithmetic", f"Compute {expr}.", worked(start, ops), ops[-1][2])


def arithmetic_words(rng: random.Random, difficulty: int) -> Problem:
    """The same chain told as a story: a person's count of things changed `difficulty` times."""
    start, ops = steps(rng, difficulty)
    name, things = rng.choice(NAMES), rng.choice(THINGS)
    events = [WORDS[op].format(n=operand) for op, operand, _ in ops]
    story = f"{name} has {start} {things}. Then {name} " + ", then ".join(events) + f". How many {things} does {name} have now?"
    return Problem("arithmetic-words", story, worked(start, ops), ops[-1][2])
