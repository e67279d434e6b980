"""The quickstart (`lmforge quickstart`, what `make demo` runs): how its configuration was chosen, and its bits
per byte against gzip and xz over seeds.

Sections (`--sections`; each is recorded into benchmarks/results/quickstart.json on its own, keeping the other):
  choices  candidate model shapes (NAMO at its chosen rate), each trained once (seed 0) under the
           quickstart's time budget on the same data; the validation split is cut at a document end into a
           validation half, which chooses, and a test half, which reports; while the best shape is the
           smallest, a smaller one is added past it, so the chosen one has a worse neighbour on each side
  bpb      the real command in a new process per seed (prepare the stdlib corpus, train, evaluate the whole
           validation split, sample); the compressors score the same validation text in the same run. The
           table shows the model's bits per byte as mean ± standard deviation over the seeds, the
           compressors' (one deterministic figure each), and wall time and training tokens/s as medians
           with their spread.

    python benchmarks/quickstart.py --sections choices --work runs/quickstart-choices  # about 9 minutes a choice
    python benchmarks/quickstart.py --sections bpb     # 3 seeds, about 10 minutes each on 2 cores
    python benchmarks/quickstart.py --quick            # both, shrunk, about 3 minutes
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import THREADS, parser, run_sections  # first: pins the thread pools before numpy and torch load

from heldout import heldout_eval, split_validation
from record import over_seeds, reuse, spread

from lmforge.config import load_run_config
from lmforge.data.prepare import prepare_or_load
from lmforge.train.trainer import train

AREA = "quickstart"
QUICK = ["train.time_budget=8", "train.warmup_steps=2", "train.compile=false", "train.eval_every=0"]
QUICK_SHAPE = ["model.d_model=64", "model.n_layers=2", "model.n_heads=2"]
QUICK_DATA = ["data.tokenizer_sample_bytes=400000"]
DATA_DIR = Path("runs/benchmark-data")  # the quickstart's data, shared with benchmarks/optimizers.py


def shape(d_model: int, layers: int, heads: int) -> list[str]:
    return [f"model.d_model={d_model}", f"model.n_layers={layers}", f"model.n_heads={heads}"]


NAMO = ["train.optimizer=namo", "train.matrix_lr=0.008"]  # the optimizer sweep's best, at its chosen rate
CHOICES = {  # label: overrides of the quickstart config, every setting a choice varies spelled out
    "NAMO, d 256 x 4 layers": [*shape(256, 4, 4), *NAMO],
    "NAMO, d 192 x 4 layers": [*shape(192, 4, 3), *NAMO],
    "NAMO, d 128 x 4 layers": [*shape(128, 4, 2), *NAMO],
    "NAMO, d 128 x 2 layers": [*shape(128, 2, 2), *NAMO],  # the smallest shape won twice: each time one
    "NAMO, d 64 x 2 layers": [*shape(64, 2, 1), *NAMO],  # smaller shape was added past it
}


def train_choice(overrides: list[str], out: Path, test_dir: Path, val_tokens, token_bytes) -> dict:
    """One choice trained under the quickstart's time budget: its size, pace and both halves' bits/byte."""
    cfg = load_run_config("quickstart", [*overrides, f"train.out={out}", f"data.dir={test_dir}"])
    result = train(cfg, overwrite=True, progress=False, log=lambda s: None)
    validation = heldout_eval(out, val_tokens, token_bytes, cfg.train.seq_len, cfg.train.batch_size)
    return {"params": result.params, "steps": result.step, "train_seconds": result.train_seconds,
            "tokens_per_second": result.tokens_per_second, "validation_bpb": validation["bpb"],
            "test_bpb": result.final_eval["bpb"]}


def section_choices(args) -> tuple[dict, dict, dict]:
    """Each choice trained once under the quickstart's time budget; chosen by the validation half's bits/byte."""
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="lmforge-quickstart-"))
    base = load_run_config("quickstart", QUICK if args.quick else [])
    data = prepare_or_load(base.data, DATA_DIR, progress=False)
    test_dir = work / "test-data"
    val_tokens, test_tokens = split_validation(data, len(data.shard("val").tokens) // 2, test_dir)
    token_bytes = data.tokenizer.token_byte_lengths()
    raw = {}
    for label, choice in CHOICES.items():
        overrides = [*(QUICK if args.quick else []), *choice, *(QUICK_SHAPE if args.quick else [])]
        out = work / label.replace(" ", "_").replace(",", "")

        run = functools.partial(train_choice, overrides, out, test_dir, val_tokens, token_bytes)
        raw[label] = reuse(out / "benchmark.json" if args.work else None, {"overrides": overrides}, run)
        print(f"  {label}: {raw[label]['steps']} steps, validation {raw[label]['validation_bpb']:.4f} bits/byte",
              flush=True)
    chosen = min(raw, key=lambda label: raw[label]["validation_bpb"])
    rows = [{"choice": label, **r, "chosen": label == chosen} for label, r in raw.items()]
    settings = {"time_budget_s": base.train.time_budget, "seed": base.train.seed, "threads": THREADS,
                "validation_tokens": len(val_tokens) - 1, "test_tokens": test_tokens - 1,
                "choices": {label: choice for label, choice in CHOICES.items()}}
    return {"choices": rows}, {"choices": raw}, {"choices": settings}


def run_seed(out: Path, seed: int, overrides: list[str]) -> dict:
    """One `lmforge quickstart` run; its report.json."""
    cmd = [sys.executable, "-m", "lmforge.cli", "quickstart", "--out", str(out), "--no-progress",
           f"train.seed={seed}", *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"quickstart with seed {seed} failed:\n{proc.stderr[-2000:]}")
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def section_bpb(args) -> tuple[dict, dict, dict]:
    """The quickstart command over seeds, beside gzip -9 and xz -9 on the same validation text."""
    seeds = [int(s) for s in args.seeds.split(",")]
    overrides = [*QUICK, *QUICK_SHAPE, *QUICK_DATA] if args.quick else []
    reports = {}
    with tempfile.TemporaryDirectory(prefix="lmforge-quickstart-") as work:
        for seed in seeds:
            reports[seed] = run_seed(Path(work) / f"seed{seed}", seed, overrides)
            print(f"  seed {seed}: {reports[seed]['val_bpb']:.4f} bits/byte in {reports[seed]['wall_seconds']:.0f} s",
                  flush=True)
    first = reports[seeds[0]]
    rows = [
        {"system": "lmforge quickstart model", "bpb": over_seeds([r["val_bpb"] for r in reports.values()]),
         "wall_s": spread([r["wall_seconds"] for r in reports.values()]),
         "tokens_per_s": spread([r["tokens_per_second"] for r in reports.values()])},
        {"system": "xz -9", "bpb": first["xz_bpb"]},
        {"system": "gzip -9", "bpb": first["gzip_bpb"]},
    ]
    settings = {"seeds": seeds, "overrides": overrides, "params": first["params"],
                "steps": [r["steps"] for r in reports.values()], "train_tokens": [r["train_tokens"] for r in reports.values()],
                "val_bytes": first["val_bytes"]}
    raw = {str(s): {k: v for k, v in r.items() if k != "sample"} for s, r in reports.items()}
    return {"bpb": rows}, {"bpb": raw}, {"bpb": settings}


SECTIONS = {"choices": section_choices, "bpb": section_bpb}
TITLES = {"choices": "choices, each trained once under the quickstart's time budget ({threads} threads)",
          "bpb": "the quickstart command over seeds, beside gzip -9 and xz -9 ({threads} threads)"}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    p.add_argument("--seeds", default="0,1,2", help="training seeds of the bpb section (default 0,1,2)")
    p.add_argument("--work", default=None, help="keep each finished choice here and reuse it, so an interrupted "
                   "choices section resumes (default: a new temporary directory)")
    run_sections(SECTIONS, p.parse_args(), AREA, TITLES)


if __name__ == "__main__":
    main()
