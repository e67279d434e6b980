"""The quickstart (`lmforge quickstart`, what `make demo` runs) over seeds: bits per byte against gzip and xz.

Each seed runs the real command in a new process (prepare the stdlib corpus, train, evaluate the whole
validation split, sample); the compressors score the same validation text in the same run. The table
shows the model's bits per byte as mean ± standard deviation over the seeds, the compressors' (one
deterministic figure each), and wall time and training tokens/s as medians with their spread.

    python benchmarks/quickstart.py              # 3 seeds, about 25 minutes on 2 cores
    python benchmarks/quickstart.py --quick      # 3 seeds of a 12-step run, about 2 minutes
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import parser, print_table
from record import over_seeds, record, spread
from render import cells
from tables import TABLES

QUICK = ["train.steps=12", "train.warmup_steps=2", "train.compile=false", "train.eval_every=12",
         "data.tokenizer_sample_bytes=400000"]


def run_seed(out: Path, seed: int, overrides: list[str]) -> dict:
    """One `lmforge quickstart` run; its report.json."""
    cmd = [sys.executable, "-m", "lmforge.cli", "quickstart", "--out", str(out), "--no-progress",
           f"train.seed={seed}", *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"quickstart with seed {seed} failed:\n{proc.stderr[-2000:]}")
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2", help="training seeds (default 0,1,2)")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    overrides = QUICK if args.quick else []
    reports = {}
    with tempfile.TemporaryDirectory(prefix="lmforge-quickstart-") as work:
        for seed in seeds:
            reports[seed] = run_seed(Path(work) / f"seed{seed}", seed, overrides)
            print(f"  seed {seed}: {reports[seed]['val_bpb']:.4f} bits/byte in {reports[seed]['wall_seconds']:.0f} s",
                  flush=True)
    first = reports[seeds[0]]
    wall = spread([r["wall_seconds"] for r in reports.values()])
    rows = [
        {"system": "lmforge quickstart model", "bpb": over_seeds([r["val_bpb"] for r in reports.values()]),
         "wall_s": wall, "tokens_per_s": spread([r["tokens_per_second"] for r in reports.values()])},
        {"system": "xz -9", "bpb": first["xz_bpb"]},
        {"system": "gzip -9", "bpb": first["gzip_bpb"]},
    ]
    settings = {"bpb": {"seeds": seeds, "overrides": overrides, "params": first["params"], "steps": first["steps"],
                        "train_tokens": first["train_tokens"], "val_bytes": first["val_bytes"]}}
    raw = {"bpb": {str(s): {k: v for k, v in r.items() if k != "sample"} for s, r in reports.items()}}
    spec = TABLES["quickstart"]["bpb"]
    print(f"\nquickstart, {first['params']:,} parameters, {first['steps']} steps, {len(seeds)} seeds, "
          f"validation {first['val_bytes']:,} bytes")
    print_table(cells(spec, rows), [(c.header, c.header, "s") for c in spec])
    print(f"recorded in {record('quickstart', settings, raw, {'bpb': rows}, path=args.out, quick=args.quick)}")


if __name__ == "__main__":
    main()
