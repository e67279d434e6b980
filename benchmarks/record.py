"""Recorded results: every benchmark run writes what it measured, and on what, to benchmarks/results/<area>.json.

A record holds the git commit (and whether the tree had uncommitted changes), the UTC date,
the machine, the versions of the packages the numbers depend on, the run's settings, every
repeat's raw numbers and the summary the tables are rendered from (`render.py`). A `--quick`
run writes <area>.quick.json, so it never replaces a full run. Timings in a summary are
`spread(values)`: the median with the minimum, maximum and number of repeats. A quality figure
measured over seeds is `over_seeds(values)`: mean, standard deviation and every value; a ranking
of two variants is claimed only where `separated(a, b)`.

    from record import record, spread
    record("serving", settings, raw, {"single": [{"weights": "int4", "tokens_per_s": spread(rates)}]}, quick=args.quick)
"""

from __future__ import annotations

import functools
import json
import statistics
import subprocess
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from common import machine

from lmforge.fileio import write_json

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("lmforge", "torch", "transformers")


def results_path(area: str, quick: bool = False) -> Path:
    """Where a run of `area` is recorded (a quick run beside the full one, never over it)."""
    return RESULTS_DIR / f"{area}{'.quick' if quick else ''}.json"


def spread(values: list[float]) -> dict:
    """The summary of repeated measurements: median, min, max and how many."""
    values = [float(v) for v in values]
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def over_seeds(values: list[float]) -> dict:
    """The summary of one quality figure over seeds: mean, sample standard deviation, how many, and each value."""
    values = [float(v) for v in values]
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "n": len(values), "values": values}


def separated(a: dict, b: dict) -> bool:
    """Whether two summaries (`spread` or `over_seeds`) differ by more than their spread: ranges that do not
    overlap, or means further apart than the sum of the standard deviations. Rankings are claimed only then."""
    if "mean" in a:
        return abs(a["mean"] - b["mean"]) > a["std"] + b["std"]
    return a["max"] < b["min"] or b["max"] < a["min"]


@functools.cache
def git_state() -> dict:
    """The commit the code was at and whether the work tree differed from it, as it was when the run began
    (`parser()` asks first, so edits made while a long run goes on do not change what it records)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()

    try:  # results files written by earlier runs, and the page they are rendered into, do not count as changes
        changes = git("status", "--porcelain", "--", ".", ":(exclude)benchmarks/results", ":(exclude)BENCHMARKS.md")
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(changes)}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def package_versions(extra: dict | None = None) -> dict:
    """Installed versions of the packages numbers depend on (None when absent), plus `extra` (peers' builds)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {**versions, **(extra or {})}


def record(
    area: str,
    settings: dict,
    raw: dict,
    summary: dict,
    path: str | Path | None = None,
    quick: bool = False,
    versions: dict | None = None,
    keep_others: bool = False,
) -> Path:
    """Write one run's record atomically; returns its path (`path`, else results_path(area, quick)).

    Each table carries where it was measured (`tables[name]`: commit, date, machine, versions).
    With `keep_others`, tables of an earlier record at `path` that this run did not measure stay,
    with their own provenance and settings, so the sections of a long benchmark can be recorded
    in separate runs."""
    path = Path(path) if path else results_path(area, quick)
    run = {
        **git_state(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "versions": package_versions(versions),
    }
    tables = {name: run for name in summary}
    if keep_others and path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        kept = {name: rows for name, rows in old["summary"].items() if name not in summary}
        old_tables = old.get("tables", {})
        tables = {**{name: old_tables.get(name, {k: old.get(k) for k in run}) for name in kept}, **tables}
        summary = {**kept, **summary}
        settings, raw = {**old["settings"], **settings}, {**old["raw"], **raw}
    payload = {"area": area, "quick": quick, **run, "settings": settings, "raw": raw, "summary": summary,
               "tables": tables}
    write_json(path, payload)
    return path


def reuse(path: Path | None, settings: dict, compute: Callable[[], object]):
    """A finished run's result, read from `path` when a run with the same `settings` left it there, else
    `compute()`d and kept at `path` (None: not kept), so a long benchmark interrupted resumes where it stopped."""
    settings = json.loads(json.dumps(settings))  # as it reads back (tuples become lists)
    if path is not None and path.is_file():
        kept = json.loads(path.read_text(encoding="utf-8"))
        if kept.get("settings") == settings:
            return kept["result"]
    result = compute()
    if path is not None:
        write_json(path, {"settings": settings, "result": result})
    return result
