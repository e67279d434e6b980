"""Linear equations in one unknown, a x + b = c, solved in two written steps."""

from __future__ import annotations

import random

from lmforge.eval.tasks import Problem


def equation(rng: random.Random, difficulty: int) -> Problem:
    """Coefficients grow with `difficulty`; the solution is always an integer."""
    top = 5 * difficulty
    x, a, b = rng.randint(-top, top), rng.randint(2, 3 + difficulty), rng.randint(-top, top)
    c = a * x + b
    sign = "+" if b >= 0 else "-"
    prompt = f"Solve for x: {a}x {sign} {abs(b)} = {c}."
    moved = f"{c} - {b}" if b >= 0 else f"{c} + {-b}"
    solution = f"{a}x = {moved} = {c - b}\nx = {c - b} / {a} = {x}\nAnswer: {x}"
    return Problem("equations", prompt, solution, x)
