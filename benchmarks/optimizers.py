"""AdamW vs Muon vs NAMO vs NAMO-D on the quickstart model and the stdlib corpus.

Every optimizer trains the same model from the same seed on the same token budget and
data order with a warmup-stable-decay schedule, for each learning rate of a small sweep
(the matrix optimizers sweep the learning rate of the hidden matrices; embeddings, head
and gains keep AdamW at the quickstart rate). Each sweep spans a factor of 4 around the
expected optimum, so a best rate at an end of the range is visible in the per-run lines.
Finished runs are kept in --work and reused, so an interrupted benchmark continues. Reported per optimizer at its best rate:
final validation loss, the first step at which the validation loss reaches AdamW's best
final loss, the share of step time spent in the optimizer, and a confirmation run of the
best matrix optimizer with 70% of AdamW's steps (its own full schedule). Writes
optimizers.png with the validation curves.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from common import machine, parser, print_table, write_json

from lmforge.config import load_run_config
from lmforge.data.prepare import prepare_or_load
from lmforge.fileio import write_json as write_json_atomic
from lmforge.train.metrics import read_metrics
from lmforge.train.trainer import train

SWEEPS = {
    "adamw": ("lr", [1e-3, 2e-3, 4e-3]),
    "muon": ("matrix_lr", [4e-3, 8e-3, 1.6e-2]),
    "namo": ("matrix_lr", [4e-3, 8e-3, 1.6e-2]),
    "namo_d": ("matrix_lr", [4e-3, 8e-3, 1.6e-2]),
}


def run(work: Path, data_dir: Path, optimizer: str, key: str, lr: float, steps: int, quick: bool) -> dict:
    overrides = [f"train.optimizer={optimizer}", f"train.{key}={lr}", f"train.steps={steps}", "train.compile=false",
                 f"train.out={work / f'{optimizer}-{lr:g}-{steps}'}", f"data.dir={data_dir}", "train.log_every=10",
                 f"train.eval_every={max(steps // 15, 1)}", "train.warmup_steps=" + str(max(steps // 20, 1))]
    if quick:
        overrides += ["model.d_model=128", "model.n_layers=2", "model.n_heads=2", "train.seq_len=128", "train.batch_size=8",
                      "train.eval_tokens=8192"]
    cfg = load_run_config("quickstart", overrides)
    done = Path(cfg.train.out) / "benchmark.json"
    if done.is_file():
        return json.loads(done.read_text())
    result = train(cfg, overwrite=True, progress=False, log=lambda s: None)
    records = read_metrics(Path(cfg.train.out) / "metrics.jsonl")
    curve = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r and not r.get("final")]
    shares = sorted(r["optimizer_share"] for r in records if "optimizer_share" in r)
    out = {"optimizer": optimizer, "lr": lr, "steps": steps, "final_val_loss": curve[-1][1],
           "full_val_loss": result.final_eval["loss"], "full_val_bpb": result.final_eval["bpb"], "curve": curve,
           "optimizer_share": shares[len(shares) // 2], "seconds_per_step": result.train_seconds / steps}
    write_json_atomic(done, out)
    return out


def steps_to_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((step for step, loss in curve if loss <= target), None)


def plot(best: dict[str, dict], path: Path, target: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for name, r in best.items():
        ax.plot(*zip(*r["curve"]), "o-", ms=3, lw=1.3, label=f"{name} (lr {r['lr']:g})")
    ax.axhline(target, color="gray", ls="--", lw=0.8, label="AdamW final")
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_ylim(top=min(ax.get_ylim()[1], target + 1.5))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="steps per run (default 300, quick 40)")
    p.add_argument("--plot", default="optimizers.png")
    p.add_argument("--work", default=None, help="directory for the runs; finished runs found there are reused (default: a new temporary directory)")
    args = p.parse_args()
    steps = args.steps or (40 if args.quick else 300)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="lmforge-optimizers-"))
    cfg = load_run_config("quickstart")
    data_dir = Path("runs/benchmark-data")
    prepare_or_load(cfg.data, data_dir, progress=False)

    runs = []
    for optimizer, (key, lrs) in SWEEPS.items():
        for lr in lrs:
            runs.append(run(work, data_dir, optimizer, key, lr, steps, args.quick))
            print(f"  {optimizer:7s} {key}={lr:g}: val loss {runs[-1]['final_val_loss']:.4f}", flush=True)
    best = {name: min((r for r in runs if r["optimizer"] == name), key=lambda r: r["final_val_loss"]) for name in SWEEPS}
    target = best["adamw"]["final_val_loss"]
    rows = []
    for name, r in best.items():
        reach = steps_to_reach(r["curve"], target)
        rows.append({"optimizer": name, "best_lr": r["lr"], "final_val_loss": r["final_val_loss"],
                     "full_val_bpb": r["full_val_bpb"], "steps_to_adamw_final": reach,
                     "fraction_of_adamw_steps": reach / steps if reach else None,
                     "optimizer_share": r["optimizer_share"], "seconds_per_step": r["seconds_per_step"]})
    challenger = min((r for r in rows if r["optimizer"] != "adamw"), key=lambda r: r["final_val_loss"])
    short = run(work, data_dir, challenger["optimizer"], SWEEPS[challenger["optimizer"]][0], challenger["best_lr"],
                round(0.7 * steps), args.quick)
    print(f"\nquickstart model{' (shrunk for --quick)' if args.quick else ''}, stdlib corpus, {steps} steps of "
          f"{'8 x 128' if args.quick else '16 x 256'} tokens, WSD schedule, bf16; best learning rate of {len(SWEEPS['adamw'][1])} "
          "per optimizer; validation loss on the periodic-evaluation subset, bits/byte on the whole split")
    print_table(rows, [("optimizer", "optimizer", "s"), ("best_lr", "best lr", "g"), ("final_val_loss", "val loss", ".4f"),
                       ("full_val_bpb", "bits/byte", ".4f"), ("steps_to_adamw_final", "steps to AdamW final", "d"),
                       ("fraction_of_adamw_steps", "of AdamW steps", ".0%"), ("optimizer_share", "optimizer share", ".1%"),
                       ("seconds_per_step", "s/step", ".3f")])
    verdict = "reaches" if short["final_val_loss"] <= target else "does not reach"
    print(f"\n{challenger['optimizer']} with 70% of the steps ({short['steps']}, own WSD schedule): val loss "
          f"{short['final_val_loss']:.4f} vs AdamW's {target:.4f} at {steps} steps: {verdict} it")
    plot(best, Path(args.plot), target)
    print(f"curves: {args.plot}")
    write_json(args.out, {"benchmark": "optimizers", "steps": steps, "quick": args.quick, "rows": rows, "runs": runs,
                          "short_run": short, "machine": machine()})


if __name__ == "__main__":
    main()
