"""The whole chain on one model, timed as a user runs it: `lmforge chain` from the command line (curate, train a
hybrid with NAMO, quantize to int4, serve, score through the server with lm-eval and DTR), every stage's figures
and seconds from its report, and the total against the goal of 15 minutes on 2 cores.

Each repeat is a fresh chain into a new directory (the data stage and training start from nothing).

    python benchmarks/chain.py               # one full chain, about 15 minutes on 2 cores
    python benchmarks/chain.py --repeats 3   # the spread of the total over runs
    python benchmarks/chain.py --quick       # the CI-sized chain
"""

from __future__ import annotations

from common import THREADS, parser, print_recorded  # first: it pins the thread pools before torch is imported

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from record import record, spread
from tables import TABLES

AREA = "chain"
GOAL_S = 15 * 60
TITLES = {
    "stages": "lmforge chain: each stage's seconds (median of {repeats} runs) and figures (the last run)",
    "total": "lmforge chain: the whole run from the command line against the goal ({threads} threads)",
}


def one_chain(quick: bool) -> tuple[float, dict]:
    """Run `lmforge chain` in a new directory; its wall seconds and its report."""
    with tempfile.TemporaryDirectory(prefix="lmforge-chain-") as tmp:
        cmd = [sys.executable, "-m", "lmforge.cli", "chain", "--out", str(Path(tmp) / "chain"), "--no-progress",
               *(["--quick"] if quick else [])]
        start = time.perf_counter()
        if subprocess.run(cmd).returncode:
            sys.exit(f"failed: {' '.join(cmd[2:])}")
        seconds = time.perf_counter() - start
        return seconds, json.loads((Path(tmp) / "chain" / "report.json").read_text())


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=1, help="whole chains to run (each about 15 minutes)")
    args = p.parse_args()
    runs = [one_chain(args.quick) for _ in range(args.repeats)]
    walls, reports = [w for w, _ in runs], [r for _, r in runs]
    last = reports[-1]
    stages = []
    for i, stage in enumerate(last["stages"]):
        figures = ", ".join(f"{k} {v}" for k, v in stage.items() if k not in ("stage", "seconds"))
        stages.append({"stage": stage["stage"], "seconds": spread([r["stages"][i]["seconds"] for r in reports]),
                       "figures": figures})
    total = [{"command": f"lmforge chain{' --quick' if args.quick else ''}", "seconds": spread(walls),
              "goal_s": GOAL_S, "within_goal": max(walls) <= GOAL_S}]
    settings = {"repeats": args.repeats}
    tables = {"stages": stages, "total": total}
    path = record(AREA, {**settings, "threads": THREADS}, {"wall_seconds": walls, "reports": reports}, tables, args.out,
                  args.quick)
    print_recorded(tables, TABLES[AREA], TITLES, settings, path)


if __name__ == "__main__":
    main()
