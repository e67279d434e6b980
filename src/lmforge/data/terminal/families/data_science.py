"""Data science: paired measurements with planted outliers; drop the rows whose z-score exceeds 3 and report
descriptive statistics and the Pearson correlation of what is left."""

from __future__ import annotations

import random
import statistics

from lmforge.data.terminal.families import Family
from lmforge.data.terminal.families.common import (csv_text, json_reader, make_task, mutate, python_step,
                                                    tests_module)
from lmforge.data.terminal.task import TerminalTask

# (x column, y column, x mean, x spread, slope of y on x, y intercept, y noise)
QUANTITIES = (
    ("temperature_c", "pressure_kpa", 21.0, 4.0, 1.8, 95.0, 3.0),
    ("height_cm", "weight_kg", 170.0, 9.0, 0.9, -85.0, 7.0),
    ("voltage_v", "current_ma", 12.0, 1.5, 40.0, 10.0, 25.0),
    ("dose_mg", "response_pct", 50.0, 15.0, 0.6, 12.0, 6.0),
    ("rainfall_mm", "yield_t_ha", 600.0, 120.0, 0.004, 1.5, 0.5),
)
Z_LIMIT = 3.0

SOLUTION = '''
import csv
import json
import math

with open("measurements.csv", newline="") as handle:
    reader = csv.reader(handle)
    header = next(reader)
    rows = [(float(r[1]), float(r[2])) for r in reader if r]
x_name, y_name = header[1], header[2]


def mean(v):
    return sum(v) / len(v)


def std(v):
    m = mean(v)
    return math.sqrt(sum((a - m) ** 2 for a in v) / len(v))


def median(v):
    s, n = sorted(v), len(v)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def z_scores(v):
    m, s = mean(v), std(v)
    return [abs(a - m) / s for a in v]


zx, zy = z_scores([r[0] for r in rows]), z_scores([r[1] for r in rows])
kept = [r for r, a, b in zip(rows, zx, zy) if a <= 3 and b <= 3]
kx, ky = [r[0] for r in kept], [r[1] for r in kept]
mx, my = mean(kx), mean(ky)
sxy = sum((a - mx) * (b - my) for a, b in kept)
r = sxy / math.sqrt(sum((a - mx) ** 2 for a in kx) * sum((b - my) ** 2 for b in ky))
out = {"rows_used": len(kept), "rows_dropped": len(rows) - len(kept),
       x_name: {"mean": round(mx, 4), "median": round(median(kx), 4), "std": round(std(kx), 4)},
       y_name: {"mean": round(my, 4), "median": round(median(ky), 4), "std": round(std(ky), 4)},
       "pearson_r": round(r, 4)}
with open("stats.json", "w") as handle:
    json.dump(out, handle, indent=2)
'''

TESTS = [
    ("test_stats_file", 1, """
        data = stats()
        assert {"rows_used", "rows_dropped", "pearson_r", *COLUMNS} <= set(data)
    """),
    ("test_dropped_rows", 2, """
        data = stats()
        assert (data["rows_used"], data["rows_dropped"]) == (EXPECTED["rows_used"], EXPECTED["rows_dropped"])
    """),
    ("test_mean_and_median", 2, """
        data = stats()
        for column in COLUMNS:
            for key in ("mean", "median"):
                assert math.isclose(data[column][key], EXPECTED[column][key], abs_tol=2e-4), (column, key)
    """),
    ("test_population_std", 2, """
        data = stats()
        for column in COLUMNS:
            assert math.isclose(data[column]["std"], EXPECTED[column]["std"], abs_tol=2e-4), column
    """),
    ("test_pearson_r", 2, """
        assert math.isclose(stats()["pearson_r"], EXPECTED["pearson_r"], abs_tol=2e-4)
    """),
]

LOADER = json_reader("stats", "stats.json")


def _z_scores(column: list[float]) -> list[float]:
    mean, std = statistics.fmean(column), statistics.pstdev(column)
    return [abs(v - mean) / std for v in column]


def _measurements(rng: random.Random, quantity: tuple) -> list[tuple[float, float]]:
    """Rows (x, y) rounded as written, with 2-5 outliers planted, redrawn until no z-score is near the limit."""
    _, _, mean, spread, slope, intercept, noise = quantity
    while True:
        rows = []
        for _ in range(rng.randint(80, 200)):
            x = rng.gauss(mean, spread)
            rows.append([x, intercept + slope * x + rng.gauss(0, noise)])
        for index in rng.sample(range(len(rows)), rng.randint(2, 5)):
            column = rng.randrange(2)
            scale = spread if column == 0 else abs(slope) * spread + noise
            rows[index][column] += rng.choice((-1, 1)) * rng.uniform(7, 12) * scale
        rows = [(round(x, 3), round(y, 3)) for x, y in rows]
        zs = _z_scores([r[0] for r in rows]) + _z_scores([r[1] for r in rows])
        if all(abs(z - Z_LIMIT) > 0.05 for z in zs):
            return rows


def _stats(rows: list[tuple[float, float]], names: tuple[str, str]) -> dict:
    """The expected report: rows kept after the z-score filter, their statistics and correlation."""
    zx, zy = _z_scores([r[0] for r in rows]), _z_scores([r[1] for r in rows])
    kept = [r for r, a, b in zip(rows, zx, zy) if a <= Z_LIMIT and b <= Z_LIMIT]
    out = {"rows_used": len(kept), "rows_dropped": len(rows) - len(kept)}
    for name, column in zip(names, ([r[0] for r in kept], [r[1] for r in kept])):
        out[name] = {"mean": statistics.fmean(column), "median": statistics.median(column),
                     "std": statistics.pstdev(column)}
    out["pearson_r"] = statistics.correlation([r[0] for r in kept], [r[1] for r in kept])
    return out


def _build_stats(rng: random.Random, task_id: str) -> TerminalTask:
    quantity = rng.choice(QUANTITIES)
    names = quantity[:2]
    rows = _measurements(rng, quantity)
    ids = rng.sample(range(1000, 9999), len(rows))
    text = csv_text([["sample_id", *names], *([i, f"{x:.3f}", f"{y:.3f}"] for i, (x, y) in zip(ids, rows))])
    instruction = f"""
        measurements.csv holds paired measurements (columns sample_id, {names[0]}, {names[1]}); a few rows are
        gross measurement errors.

        Drop every row in which either measurement has an absolute z-score above 3, where the z-score of a value
        is its distance from its column's mean divided by the column's population standard deviation, both
        computed over all rows (one pass, no iteration). Over the remaining rows, write stats.json, a JSON
        object with "rows_used" and "rows_dropped" (counts), one object per measurement column, keyed
        "{names[0]}" and "{names[1]}", each with "mean", "median" and "std" (population standard deviation),
        and "pearson_r", the Pearson correlation of the two columns. Round every statistic to 4 decimals.
    """
    code = python_step(SOLUTION)
    broken = mutate(code, "for a in v) / len(v))", "for a in v) / (len(v) - 1))")
    expected = _stats(rows, names)
    return make_task(STATS, task_id, instruction=instruction, files={"measurements.csv": text},
                     tests=tests_module({"COLUMNS": list(names), "EXPECTED": expected}, TESTS, LOADER),
                     solution=code, broken=broken, metadata={"broken": "sample instead of population std"})


STATS = Family("measurement-stats", "data_science",
               ("descriptive-statistics", "correlation", "outlier-detection", "numeric-precision", "json-output"),
               _build_stats)

FAMILIES = (STATS,)
