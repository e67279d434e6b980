"""AdamW vs Muon vs NAMO vs NAMO-D on the small reference model (configs/small.toml) and the stdlib corpus, on equal terms.

Every optimizer gets the same parameter groups (`optim.build_optimizer`): the hidden matrices at
the matrix rate, updated by the optimizer under test (AdamW included); embeddings, head, gains
and biases by AdamW at one rate shared by every run. Same model, seed, data order, token budget
and warmup-stable-decay schedule for every run. The validation split is cut at a document end
into a validation subset, which chooses rates, and a disjoint test subset, which reports.

Sections (`--sections`; each is recorded into benchmarks/results/optimizers.json on its own,
keeping the others, so they can run separately, in this order):
  sweep  a 5-point sweep of the matrix rate per optimizer (factors of 2), extended one point past
         an end while the best sits at an end (at most 2 points, 1 with --quick); chosen by the
         validation subset's loss (seed 0)
  seeds  3 seeds at each chosen rate: test loss and bits/byte (mean ± std), steps until the test
         loss reaches AdamW's final test loss, optimizer share of step time and step time (median
         of the run's log windows after the first)
  long   AdamW vs the best matrix optimizer (by validation loss over the seeds) at their chosen
         rates, for 4x the steps (seed 0): does the advantage hold as training goes on?
The loss-curve plot (benchmarks/results/optimizers.png) is drawn from the recorded curves.
Finished runs are kept in --work and reused, so an interrupted benchmark continues.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from common import THREADS, parser, print_table  # first: pins the thread pools before numpy and torch load

import numpy as np
from heldout import heldout_eval, split_validation
from record import over_seeds, record, results_path, separated, spread
from render import cells
from tables.optimizers import TABLES

from lmforge.config import load_run_config
from lmforge.data.prepare import prepare_or_load
from lmforge.fileio import write_json
from lmforge.plotting import pyplot, save_figure
from lmforge.train.metrics import read_metrics
from lmforge.train.trainer import train

AREA = "optimizers"
SECTIONS = ("sweep", "seeds", "long")
OPTIMIZERS = ("adamw", "muon", "namo", "namo_d")
LABELS = {"adamw": "AdamW", "muon": "Muon", "namo": "NAMO", "namo_d": "NAMO-D"}
CENTRES = {"adamw": 1e-3, "muon": 4e-3, "namo": 8e-3, "namo_d": 8e-3}  # middle of each 5-point sweep
SEEDS = (0, 1, 2)
LONG_FACTOR = 4
DATA_DIR = Path("runs/benchmark-data")
SIZES = {  # full and --quick: model overrides, batch, window, steps, evaluations per run, tokens per subset,
    # points added past an end of a sweep at most
    False: {"model": [], "batch_size": 8, "seq_len": 256, "steps": 200, "evals": 8, "subset_tokens": 32768,
            "extensions": 2},
    True: {"model": ["model.d_model=64", "model.n_layers=2", "model.n_heads=2"], "batch_size": 4, "seq_len": 64,
           "steps": 16, "evals": 4, "subset_tokens": 2048, "extensions": 1},
}
BASE_LR = 3e-3  # embeddings, head and gains, every run (the small config's rate)


class Bench:
    """The settings, data subsets and run cache shared by the sections."""

    def __init__(self, args):
        self.quick, self.size = args.quick, SIZES[args.quick]
        self.work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="lmforge-optimizers-"))
        data = prepare_or_load(load_run_config("small").data, DATA_DIR, progress=False)
        self.test_dir = self.work / "test-data"
        self.val_tokens, self.test_tokens = split_validation(data, self.size["subset_tokens"], self.test_dir)
        self.token_bytes = data.tokenizer.token_byte_lengths()

    def settings(self, steps: int) -> dict:
        return {"model": "small" + (" (shrunk: " + ", ".join(self.size["model"]) + ")" if self.quick else ""),
                "batch_size": self.size["batch_size"], "seq_len": self.size["seq_len"], "steps": steps,
                "base_lr": BASE_LR, "schedule": "wsd, warmup steps/20, decay over the last 30%",
                "validation_tokens": len(self.val_tokens) - 1, "test_tokens": self.test_tokens - 1,
                "threads": THREADS, "precision": "auto (bf16 where supported)"}

    def run(self, optimizer: str, matrix_lr: float, seed: int = 0, steps: int | None = None, curve: bool = False) -> dict:
        """One training run (reused from --work when finished there): final validation and test figures,
        the test curve when `curve`, and the per-window timings."""
        steps = steps or self.size["steps"]
        out = self.work / f"{optimizer}-{matrix_lr:g}-seed{seed}-{steps}{'-curve' if curve else ''}"
        done = out / "benchmark.json"
        if done.is_file():
            return json.loads(done.read_text())
        seq, batch = self.size["seq_len"], self.size["batch_size"]
        overrides = [*self.size["model"], f"train.optimizer={optimizer}", f"train.lr={BASE_LR}",
                     f"train.matrix_lr={matrix_lr}", f"train.seed={seed}", f"train.steps={steps}",
                     f"train.batch_size={batch}", f"train.seq_len={seq}", "train.compile=false",
                     f"train.warmup_steps={max(steps // 20, 1)}", f"train.log_every={max(steps // 20, 1)}", f"train.out={out}",
                     f"train.eval_every={steps // self.size['evals'] if curve else 0}",
                     f"train.eval_tokens={self.test_tokens}", f"data.dir={self.test_dir}"]
        result = train(load_run_config("small", overrides), overwrite=True, progress=False, log=lambda s: None)
        records = read_metrics(out / "metrics.jsonl")
        windows = [r for r in records if "optimizer_share" in r][1:]  # the first window holds the warm-up
        summary = {
            "optimizer": optimizer, "matrix_lr": matrix_lr, "seed": seed, "steps": steps,
            "val_loss": self.validation_loss(out), "test_loss": result.final_eval["loss"],
            "test_bpb": result.final_eval["bpb"],
            "curve": [(r["step"], r["val_loss"]) for r in records if "val_loss" in r and not r.get("final")],
            "optimizer_share": [r["optimizer_share"] for r in windows],
            "ms_per_step": [1000 * batch * seq / r["tokens_per_second"] for r in windows],
        }
        write_json(done, summary)
        return summary

    def validation_loss(self, out: Path) -> float:
        """Loss of a finished run's model on the validation subset."""
        return heldout_eval(out, self.val_tokens, self.token_bytes, self.size["seq_len"], self.size["batch_size"])["loss"]


def finite(loss: float) -> float:
    """A diverged run's loss (nan) ranks last."""
    return loss if math.isfinite(loss) else math.inf


def sweep(bench: Bench, optimizer: str) -> dict[float, dict]:
    """Seed-0 runs over 5 matrix rates around the optimizer's centre, extended past an end while the best is there."""
    runs = {lr: bench.run(optimizer, lr) for lr in (CENTRES[optimizer] * 2.0**k for k in range(-2, 3))}
    for _ in range(bench.size["extensions"]):
        best = min(runs, key=lambda lr: finite(runs[lr]["val_loss"]))
        if min(runs) < best < max(runs):
            break
        new = best / 2 if best == min(runs) else best * 2
        runs[new] = bench.run(optimizer, new)
    return dict(sorted(runs.items()))


def steps_to_reach(curve: list, target: float) -> int | None:
    """The first evaluated step whose test loss is at or below `target` (None: never)."""
    return next((step for step, loss in curve if loss <= target), None)


def reach_summary(runs: list[dict], target: float) -> dict:
    """Steps to reach `target` over the runs that reach it, and how many did."""
    steps = [s for s in (steps_to_reach(r["curve"], target) for r in runs) if s is not None]
    return {"steps_to_adamw": over_seeds(steps) if steps else None, "reached": f"{len(steps)} of {len(runs)}"}


def section_sweep(bench: Bench) -> tuple[dict, dict]:
    rows, raw = [], {}
    for name in OPTIMIZERS:
        runs = sweep(bench, name)
        chosen = min(runs, key=lambda lr: finite(runs[lr]["val_loss"]))
        interior = min(runs) < chosen < max(runs)
        raw[name] = [{k: v for k, v in r.items() if k != "curve"} for r in runs.values()]
        rows += [{"optimizer": LABELS[name], "matrix_lr": lr, "val_loss": r["val_loss"], "test_loss": r["test_loss"],
                  "chosen": lr == chosen, "interior": interior if lr == chosen else None} for lr, r in runs.items()]
    return {"sweep": rows}, raw


def chosen_rates(summary: dict) -> dict[str, float]:
    """Each optimizer's rate chosen by the sweep."""
    by_label = {row["optimizer"]: row["matrix_lr"] for row in summary["sweep"] if row["chosen"]}
    return {name: by_label[LABELS[name]] for name in OPTIMIZERS}


def section_seeds(bench: Bench, rates: dict[str, float]) -> tuple[dict, dict]:
    runs = {name: [] for name in OPTIMIZERS}
    for seed in SEEDS:  # seed by seed: the timed runs (seed 0) run together, on one machine and day, when resumed
        for name in OPTIMIZERS:
            runs[name].append(bench.run(name, rates[name], seed, curve=True))
    adamw_test = over_seeds([r["test_loss"] for r in runs["adamw"]])
    rows = []
    for name, seeded in runs.items():
        test = over_seeds([r["test_loss"] for r in seeded])
        rows.append({
            "optimizer": LABELS[name], "matrix_lr": rates[name], "steps": bench.size["steps"],
            "val_loss": over_seeds([r["val_loss"] for r in seeded]), "test_loss": test,
            "test_bpb": over_seeds([r["test_bpb"] for r in seeded]),
            "minus_adamw": test["mean"] - adamw_test["mean"],
            "vs_adamw": "-" if name == "adamw" else ("separated" if separated(test, adamw_test) else "within spread"),
            **(reach_summary(seeded, adamw_test["mean"]) if name != "adamw" else {"steps_to_adamw": None, "reached": "-"}),
            "optimizer_share": spread([s for r in seeded[:1] for s in r["optimizer_share"]]),
            "ms_per_step": spread([s for r in seeded[:1] for s in r["ms_per_step"]]),
        })
    return {"seeds": rows}, {name: seeded for name, seeded in runs.items()}


def challenger(summary: dict) -> str:
    """The matrix optimizer with the lowest validation loss over the seeds."""
    rows = [row for row in summary["seeds"] if row["optimizer"] != LABELS["adamw"]]
    label = min(rows, key=lambda row: finite(row["val_loss"]["mean"]))["optimizer"]
    return next(name for name in OPTIMIZERS if LABELS[name] == label)


def section_long(bench: Bench, rates: dict[str, float], rival: str) -> tuple[dict, dict]:
    steps = LONG_FACTOR * bench.size["steps"]
    runs = {name: bench.run(name, rates[name], 0, steps, curve=True) for name in ("adamw", rival)}
    target = runs["adamw"]["test_loss"]
    rows = []
    for name, r in runs.items():
        reach = steps_to_reach(r["curve"], target) if name != "adamw" else None
        rows.append({"optimizer": LABELS[name], "matrix_lr": rates[name], "steps": steps, "test_loss": r["test_loss"],
                     "test_bpb": r["test_bpb"], "minus_adamw": r["test_loss"] - target, "steps_to_adamw": reach})
    return {"long": rows}, runs


def plot(results: dict, path: Path) -> None:
    """Test-loss curves from a record: each optimizer at its chosen rate (mean over seeds), and the long runs."""
    panels = [(name, results["raw"][name]) for name in ("seeds", "long") if name in results["raw"]]
    if not panels:
        return
    fig, axes = pyplot().subplots(1, len(panels), figsize=(6.5 * len(panels), 4.2), dpi=110, squeeze=False)
    for ax, (name, runs) in zip(axes[0], panels):
        for optimizer, seeded in runs.items():
            seeded = seeded if isinstance(seeded, list) else [seeded]
            steps = [s for s, _ in seeded[0]["curve"]]
            mean = [float(np.mean([r["curve"][i][1] for r in seeded])) for i in range(len(steps))]
            ax.plot(steps, mean, "o-", ms=3, lw=1.3, label=f"{LABELS[optimizer]} (matrix lr {seeded[0]['matrix_lr']:g})")
        ax.set_title(f"{'mean of ' + str(len(SEEDS)) + ' seeds' if name == 'seeds' else 'longer run, seed 0'}")
        ax.set_xlabel("step")
        ax.set_ylabel("test loss (nats/token)")
        low = min(min(loss for _, loss in r["curve"]) for v in runs.values() for r in (v if isinstance(v, list) else [v]))
        ax.set_ylim(low - 0.05, min(ax.get_ylim()[1], low + 2.0))  # a diverged run does not flatten the rest
        ax.grid(alpha=0.3)
        ax.legend()
    save_figure(fig, path)


def show(tables: dict[str, list[dict]], path: Path) -> None:
    for name, rows in tables.items():
        spec = TABLES[name]
        print(f"\n{name}:")
        print_table(cells(spec, rows), [(c.header, c.header, "s") for c in spec])
    print(f"(recorded in {path})", flush=True)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    p.add_argument("--work", default=None, help="directory for the runs; finished runs found there are reused "
                   "(default: a new temporary directory)")
    p.add_argument("--plot", default=None, help="where to draw the curves (default benchmarks/results/optimizers.png; "
                   "a --quick run draws into --work)")
    args = p.parse_args()
    sections = args.sections.split(",")
    if unknown := set(sections) - set(SECTIONS):
        raise SystemExit(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    bench = Bench(args)
    path = Path(args.out) if args.out else results_path(AREA, args.quick)
    summary = json.loads(path.read_text())["summary"] if path.is_file() else {}
    for section in SECTIONS:
        if section not in sections:
            continue
        if section != "sweep" and "sweep" not in summary or section == "long" and "seeds" not in summary:
            raise SystemExit(f"section {section} needs the sections before it recorded in {path}; run them first")
        if section == "sweep":
            tables, raw = section_sweep(bench)
        elif section == "seeds":
            tables, raw = section_seeds(bench, chosen_rates(summary))
        else:
            tables, raw = section_long(bench, chosen_rates(summary), challenger(summary))
        steps = bench.size["steps"] * (LONG_FACTOR if section == "long" else 1)
        record(AREA, {section: bench.settings(steps)}, {section: raw}, tables, path, args.quick, keep_others=True)
        summary.update(tables)
        show(tables, path)
    plot_path = Path(args.plot) if args.plot else (bench.work if args.quick else Path(__file__).parent / "results") / "optimizers.png"
    plot(json.loads(path.read_text()), plot_path)
    print(f"curves: {plot_path}")


if __name__ == "__main__":
    main()
