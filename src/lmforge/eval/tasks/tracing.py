"""Program tracing: what a short generated Python function returns, solved by writing out each loop step."""

from __future__ import annotations

import random
from dataclasses import dataclass

from lmforge.eval.tasks import Problem


@dataclass(frozen=True)
class Update:
    """An assignment to the accumulator s: `s = s <op> <operand>`, the operand i, x or a constant."""

    op: str
    operand: str

    def code(self) -> str:
        return f"s = s {self.op} {self.operand}"

    def apply(self, s: int, i: int, x: int) -> tuple[int, str]:
        """The new s and the worked line, e.g. "s = 4 * 2 = 8"."""
        value = {"i": i, "x": x}.get(self.operand)
        value = int(self.operand) if value is None else value
        new = s + value if self.op == "+" else s - value if self.op == "-" else s * value
        return new, f"s = {s} {self.op} {value} = {new}"


def random_update(rng: random.Random) -> Update:
    op = rng.choice("+-*")
    operand = rng.choice(["2", "3"]) if op == "*" else rng.choice(["i", "x", str(rng.randint(1, 9))])
    return Update(op, operand)


def tracing(rng: random.Random, difficulty: int) -> Problem:
    """A loop of `difficulty` iterations over one or two updates, the second under `if i % m == 0` half the time."""
    x, init, n = rng.randint(1, 9), rng.randint(0, 5), max(difficulty, 1)
    first, second = random_update(rng), random_update(rng) if rng.random() < 0.7 else None
    modulus = rng.choice([2, 3]) if second and rng.random() < 0.5 else None
    body = [f"        {first.code()}"]
    if second and modulus:
        body += [f"        if i % {modulus} == 0:", f"            {second.code()}"]
    elif second:
        body.append(f"        {second.code()}")
    code = "\n".join(["def f(x):", f"    s = {init}", f"    for i in range({n}):", *body, "    return s"])
    s, lines = init, [f"x = {x}, s = {init}"]
    for i in range(n):
        s, line = first.apply(s, i, x)
        steps = [line]
        if second and (modulus is None or i % modulus == 0):
            s, line = second.apply(s, i, x)
            steps.append(line)
        lines.append(f"i = {i}: " + "; ".join(steps))
    prompt = f"What does f({x}) return?\n\n{code}"
    return Problem("tracing", prompt, "\n".join(lines + [f"Answer: {s}"]), s)
