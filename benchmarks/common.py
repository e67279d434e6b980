"""Shared helpers for benchmark scripts: thread pinning, timing, machine description, table and JSON output.

Import it before torch: it pins every thread pool to `THREADS` (LMFORGE_BENCH_THREADS, default 2) first,
so lmforge and the peers it launches run with the same number of threads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

THREADS = int(os.environ.get("LMFORGE_BENCH_THREADS", "2"))
for _pool in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_pool] = str(THREADS)

import torch  # noqa: E402  (after the thread pools are pinned)

torch.set_num_threads(THREADS)


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the flags every benchmark takes; pins the run's git state (`record.git_state`)."""
    from record import git_state

    git_state()
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="smaller run (at most 3 minutes on 2 cores), same table")
    p.add_argument("--out", default=None, help="write every printed figure to this JSON file")
    return p


def machine() -> dict:
    """What the numbers were measured on: CPU model, its widest vector instructions (a bf16 product is fast only
    with AVX-512 BF16 or AMX), cores, torch and threads."""
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    isa = next((name for name in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if name in flags), None)
    info = {"cpu": cpu, "isa": isa, "cores": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def timings(fn, repeats: int, warmup: int = 1) -> list[float]:
    """Wall seconds of each of `repeats` runs of `fn()` after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """Print rows as an aligned table; columns are (key, header, format)."""
    cells = [[h for _, h, _ in columns]] + [[format(r[k], f) if r.get(k) is not None else "-" for k, _, f in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for j, row in enumerate(cells):
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if j == 0:
            print("  ".join("-" * w for w in widths))


def write_json(path: str | None, payload: dict) -> None:
    """Write the benchmark's figures (with the machine) to `path` if given."""
    if path:
        Path(path).write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")


def run_sections(sections: dict, args, area: str, titles: dict[str, str], versions: dict | None = None) -> None:
    """Run the sections `args.sections` names, each `fn(args) -> (tables, raw, settings)`, recording each in `area`
    as it ends (the area's other tables stay) and printing its tables."""
    import sys

    from record import record
    from tables import TABLES

    chosen = args.sections.split(",")
    if unknown := set(chosen) - set(sections):
        sys.exit(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(sections)}")
    for name in chosen:
        tables, raw, settings = sections[name](args)
        path = record(area, {**settings, "threads": THREADS}, raw, tables, args.out, args.quick, versions, keep_others=True)
        print_recorded(tables, TABLES[area], titles, settings, path)


def print_recorded(tables: dict[str, list[dict]], specs: dict, titles: dict[str, str], settings: dict, path) -> None:
    """Print each recorded table under its title (formatted with the run's settings), then where it was recorded."""
    from render import cells

    for name, rows in tables.items():
        print(f"\n{titles[name].format(**{'threads': THREADS, **settings})}")
        print_table(cells(specs[name], rows), [(c.header, c.header, "s") for c in specs[name]])
    print(f"(recorded in {path})", flush=True)
