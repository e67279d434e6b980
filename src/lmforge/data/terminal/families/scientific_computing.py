"""Scientific computing: a linear system written as text files (comments, ragged spacing, rows out of
diagonal order) solved to a stated precision, and irregularly sampled power readings integrated into energy
with the trapezoidal rule, with only the standard library."""

from __future__ import annotations

import random
from decimal import Decimal
from fractions import Fraction

from lmforge.data.terminal.families import Family
from lmforge.data.terminal.families.common import (csv_text, json_reader, make_task, mutate, python_step,
                                                    tests_module)
from lmforge.data.terminal.task import TerminalTask

SOLUTION = '''
from pathlib import Path


def numbers(path):
    rows = []
    for line in Path(path).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            rows.append([float(v) for v in line.split()])
    return rows


a = numbers("A.txt")
b = [row[0] for row in numbers("b.txt")]
n = len(a)
m = [row[:] + [rhs] for row, rhs in zip(a, b)]
for col in range(n):
    pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
    m[col], m[pivot] = m[pivot], m[col]
    for r in range(col + 1, n):
        f = m[r][col] / m[col][col]
        m[r] = [x - f * y for x, y in zip(m[r], m[col])]
x = [0.0] * n
for r in reversed(range(n)):
    x[r] = (m[r][n] - sum(m[r][c] * x[c] for c in range(r + 1, n))) / m[r][r]
Path("x.txt").write_text("".join(f"{v:.6f}\\n" for v in x))
'''

TESTS = [
    ("test_x_exists", 1, """
        assert Path("x.txt").read_text().strip()
    """),
    ("test_x_shape", 1, """
        values = [float(v) for v in Path("x.txt").read_text().split()]
        assert len(values) == len(EXPECTED)
    """),
    ("test_x_format", 1, """
        lines = Path("x.txt").read_text().splitlines()
        assert lines and all(re.fullmatch(r"-?[0-9]+[.][0-9]{6}", line) for line in lines)
    """),
    ("test_solution", 3, """
        values = [float(v) for v in Path("x.txt").read_text().split()]
        assert len(values) == len(EXPECTED)
        for got, want in zip(values, EXPECTED):
            assert abs(got - want) <= 1.5e-6, (got, want)
    """),
]


def _system(rng: random.Random) -> tuple[list[list[int]], list[str]]:
    """A well-conditioned matrix (diagonally dominant before its rows are shuffled) and a right-hand side."""
    n = rng.randint(4, 8)
    a = [[rng.randint(-9, 9) for _ in range(n)] for _ in range(n)]
    for i, row in enumerate(a):
        row[i] = rng.choice((-1, 1)) * (sum(abs(v) for j, v in enumerate(row) if j != i) + rng.randint(1, 12))
    rng.shuffle(a)
    b = [f"{rng.uniform(-50, 50):.3f}" for _ in range(n)]
    return a, b


def _exact_solution(a: list[list[int]], b: list[str]) -> list[float]:
    """x with a x = b, by Gauss-Jordan elimination in exact rational arithmetic."""
    n = len(a)
    m = [[Fraction(v) for v in row] + [Fraction(rhs)] for row, rhs in zip(a, b)]
    for col in range(n):
        pivot = next(r for r in range(col, n) if m[r][col] != 0)
        m[col], m[pivot] = m[pivot], m[col]
        m[col] = [v / m[col][col] for v in m[col]]
        for r in range(n):
            if r != col and m[r][col] != 0:
                m[r] = [x - m[r][col] * y for x, y in zip(m[r], m[col])]
    return [float(row[n]) for row in m]


def _matrix_text(rng: random.Random, a: list[list[int]]) -> str:
    """The matrix with a comment header and ragged spacing between entries."""
    lines = ["# coefficient matrix A, one row per line"]
    for row in a:
        lines.append("".join(f"{v}{' ' * rng.randint(1, 3)}" for v in row).rstrip())
    return "\n".join(lines) + "\n"


def _build_solve(rng: random.Random, task_id: str) -> TerminalTask:
    a, b = _system(rng)
    files = {"A.txt": _matrix_text(rng, a), "b.txt": "# right-hand side b\n" + "\n".join(b) + "\n"}
    instruction = f"""
        A.txt holds a square matrix A of {len(a)} rows (one row per line, entries separated by one or more
        spaces) and b.txt a vector b (one entry per line); lines starting with '#' are comments. A is invertible
        and well conditioned, but its rows are in no particular order (a diagonal entry may be zero).

        Solve A x = b and write x.txt: the entries of x in order, one per line, each printed in fixed-point
        notation with exactly 6 digits after the decimal point (like 12.345678 or -0.500000). Every entry must be
        within 1e-6 of the exact solution (rounding to 6 decimals is allowed for). Python's standard library is
        available; numpy may not be installed.
    """
    code = python_step(SOLUTION)
    broken = mutate(code, "{v:.6f}", "{v:.4f}")
    return make_task(SOLVE, task_id, instruction=instruction, files=files,
                     tests=tests_module({"EXPECTED": _exact_solution(a, b)}, TESTS), solution=code, broken=broken,
                     metadata={"broken": "prints 4 decimals instead of 6"})


SOLVE = Family("solve-linear-system", "scientific_computing",
               ("linear-algebra", "parsing-matrices", "numeric-precision"), _build_solve)

ENERGY_SOLUTION = '''
import csv
import json

with open("power.csv", newline="") as handle:
    reader = csv.reader(handle)
    header = next(reader)
    rows = [[float(v) for v in row] for row in reader if row]
duration = max(r[0] for r in rows) - min(r[0] for r in rows)
rows.sort()
channels = {}
for col, name in enumerate(header[1:], start=1):
    energy = sum((b[0] - a[0]) * (a[col] + b[col]) / 2 for a, b in zip(rows, rows[1:]))
    channels[name] = {"energy_j": round(energy, 3), "mean_w": round(energy / duration, 3)}
with open("energy.json", "w") as handle:
    json.dump({"duration_s": round(duration, 3), "channels": channels}, handle, indent=2)
'''

ENERGY_TESTS = [
    ("test_energy_file", 1, """
        data = report()
        assert set(data["channels"]) == set(EXPECTED["channels"])
    """),
    ("test_duration", 1, """
        assert math.isclose(report()["duration_s"], EXPECTED["duration_s"], abs_tol=2e-3)
    """),
    ("test_energy", 3, """
        got = report()["channels"]
        for name, want in EXPECTED["channels"].items():
            assert math.isclose(got[name]["energy_j"], want["energy_j"], abs_tol=2e-3), name
    """),
    ("test_mean_power", 2, """
        got = report()["channels"]
        for name, want in EXPECTED["channels"].items():
            assert math.isclose(got[name]["mean_w"], want["mean_w"], abs_tol=2e-3), name
    """),
]

ENERGY_LOADER = json_reader("report", "energy.json")

DEVICES = ("pump_w", "heater_w", "fan_w", "compressor_w", "lights_w", "server_w")


def _readings(rng: random.Random, names: list[str]) -> list[list[Decimal]]:
    """Rows (time in s, one power per device in W), in time order, at irregular intervals."""
    t, levels = Decimal(0), [Decimal(rng.randint(50, 2000)) for _ in names]
    rows = []
    for _ in range(rng.randint(40, 120)):
        levels = [max(Decimal(0), p + Decimal(rng.randint(-3000, 3000)) / 100) for p in levels]
        rows.append([t, *levels])
        t += Decimal(rng.randint(5, 100)) / 10
    return rows


def _energy(rows: list[list[Decimal]], names: list[str]) -> dict:
    """The expected report: exact trapezoidal integrals over the time-ordered rows."""
    duration = rows[-1][0] - rows[0][0]
    channels = {}
    for col, name in enumerate(names, start=1):
        energy = sum((b[0] - a[0]) * (a[col] + b[col]) / 2 for a, b in zip(rows, rows[1:]))
        channels[name] = {"energy_j": float(energy), "mean_w": float(energy / duration)}
    return {"duration_s": float(duration), "channels": channels}


def _build_energy(rng: random.Random, task_id: str) -> TerminalTask:
    names = rng.sample(DEVICES, rng.randint(2, 3))
    rows = _readings(rng, names)
    expected = _energy(rows, names)
    shuffled = rows[:]
    rng.shuffle(shuffled)
    text = csv_text([["t_s", *names], *([f"{t:.1f}", *(f"{p:.2f}" for p in powers)] for t, *powers in shuffled)])
    instruction = f"""
        power.csv holds power readings of {len(names)} devices (columns t_s, the time in seconds, then one column
        per device in watts) sampled at irregular intervals; the rows were appended out of time order.

        Write energy.json, a JSON object with "duration_s" (the last sample time minus the first) and
        "channels", mapping each device column name to an object with "energy_j", the energy it used over the
        whole sampled period in joules (the integral of its power over time by the trapezoidal rule between
        consecutive samples in time order), and "mean_w", that energy divided by the duration. Round every
        number to 3 decimals.
    """
    code = python_step(ENERGY_SOLUTION)
    broken = mutate(code, "rows.sort()\n", "")
    return make_task(ENERGY, task_id, instruction=instruction, files={"power.csv": text},
                     tests=tests_module({"EXPECTED": expected}, ENERGY_TESTS, ENERGY_LOADER), solution=code,
                     broken=broken, metadata={"broken": "integrates the rows in file order, without sorting by time"})


ENERGY = Family("integrate-sampled-power", "scientific_computing",
                ("numerical-integration", "numeric-precision", "time-series"), _build_energy)

FAMILIES = (SOLVE, ENERGY)
