"""Multi-turn robustness: does a model keep the facts of a conversation's first turn over k unrelated turns?

Models: SmolLM2-135M-Instruct (softmax attention, through its chat template; `lmforge pull smollm2-135m`), and
four models trained here with one config, data and budget (`configs/multiturn.toml`: 4 layers, d 128, 2000 NAMO
steps of 8 x 512 tokens on the built-in "conversations" corpus, whose conversations come from seeds the probe never
uses), differing only in their mixers: softmax, linear (2Mamba), a hybrid (Mamba-2S, sparse, Mamba-2S, softmax)
and sparse attention. Each is also quantized to int4 (`lmforge quantize`, GPTQ at its defaults). SmolLM2 has 135M
parameters, the trained models about 1M (the training table says): models of SmolLM2's size cannot be trained on these machines' 2 cores.

For each k in --turns: greedy accuracy over --conversations conversations for each of --seeds probe seeds (the
same conversations for every model), mean +- std over the seeds. Writes the accuracy plot beside the record.

    python benchmarks/multiturn.py            # trains what is missing under runs/multiturn (about 2 hours)
    python benchmarks/multiturn.py --quick    # tiny models, few conversations, without SmolLM2
"""

from __future__ import annotations

from common import THREADS, parser, print_recorded  # first: it pins the thread pools before torch is imported

import subprocess
import sys
from pathlib import Path

from record import RESULTS_DIR, over_seeds, record
from tables import TABLES
from tables.multiturn import TURNS

from lmforge.config import load_run_config
from lmforge.eval.multiturn import plot, probe
from lmforge.interop.load import load_model
from lmforge.serve.engine import EngineConfig
from lmforge.serve.llm import LLM

AREA = "multiturn"
SMOLLM2 = "smollm2-135m"
VARIANTS = {
    "softmax": "[softmax]",
    "linear": "[2mamba]",
    "hybrid": "[mamba2s,sparse,mamba2s,softmax]",
    "sparse": "[sparse]",
}
TITLES = {
    "accuracy": "multi-turn probe: greedy accuracy by unrelated turns k ({conversations} conversations x seeds "
                "{seeds}, mean +- std over the seeds)",
    "training": "the trained models: time and final validation loss ({steps} steps, {threads} threads)",
}


def run(cmd: list[str]) -> None:
    """Run an lmforge command; stop the benchmark if it fails."""
    if subprocess.run([sys.executable, "-m", "lmforge.cli", *cmd]).returncode:
        sys.exit(f"failed: lmforge {' '.join(cmd)}")


def trainer_state(path: Path) -> dict:
    """The trainer's record of a run's checkpoint (step, training seconds), {} before the first checkpoint."""
    import json

    state = path / "checkpoint" / "trainer.json"
    return json.loads(state.read_text()) if state.is_file() else {}


def val_loss(path: Path) -> float | None:
    """The last validation loss a training run logged."""
    import json

    losses = [json.loads(line).get("val_loss") for line in (path / "metrics.jsonl").read_text().splitlines()]
    return next((v for v in reversed(losses) if v is not None), None)


def prepare(args) -> tuple[dict[str, str], list[dict]]:
    """Train and quantize the variants that are missing; (model name -> path or hub name, training rows)."""
    root, rows = Path(args.root), []
    models = {} if args.quick else {SMOLLM2: SMOLLM2}
    quick = ["train.steps=20", "train.eval_every=20", "model.n_layers=2"] if args.quick else []
    for name, mixers in VARIANTS.items():
        out = root / name
        trained = trainer_state(out)
        if trained.get("step") != (20 if args.quick else load_run_config("multiturn").train.steps):
            # checkpoints along the way, so a run stopped part-way continues where it stopped
            run(["train", "multiturn", f"train.out={out}", f"data.dir={root / 'data'}", f"model.mixers={mixers}",
                 "train.ckpt_every=250", "--no-progress", *quick, *(["--resume"] if trained else ["--overwrite"])])
            trained = trainer_state(out)
        params = sum(p.numel() for p in load_model(str(out)).model.parameters())
        rows.append({"model": name, "mixers": mixers, "parameters": params, "seconds": trained["train_seconds"],
                     "val_loss": val_loss(out)})
        models[name] = str(out)
    for name in list(models):
        out = root / f"{name}-int4"
        if not (out / "config.json").exists():
            run(["quantize", models[name], "--out", str(out), "--overwrite", *(["--calib-seqs", "4"] if args.quick else [])])
        models[f"{name} int4"] = str(out)
    return models, rows


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--root", default="runs/multiturn", help="where the trained and quantized models live")
    p.add_argument("--conversations", type=int, default=20, help="conversations per k and probe seed")
    p.add_argument("--seeds", type=int, default=3, help="probe seeds (blocks of conversations)")
    args = p.parse_args()
    if args.quick:
        args.root, args.conversations, args.seeds = "runs/multiturn-quick", 3, 2
    models, training = prepare(args)
    rows, raw = [], {}
    for name, path in models.items():
        loaded = load_model(path)
        llm = LLM(loaded.model, loaded.tokenizer, EngineConfig(max_num_seqs=32))
        per_seed = [probe(llm, list(TURNS), args.conversations, seed=1000 * s) for s in range(args.seeds)]
        raw[name] = per_seed
        row = {"model": name, "weights": "int4" if name.endswith("int4") else "float"}
        for k in TURNS:
            values = [acc[k] for acc in per_seed if acc[k] is not None]
            row[f"k{k}"] = over_seeds(values) if values else None
        rows.append(row)
        print(f"  {name}: " + ", ".join(f"k={k} {row[f'k{k}']['mean']:.2f}" for k in TURNS if row[f"k{k}"]), flush=True)
    settings = {"turns": list(TURNS), "conversations": args.conversations, "seeds": [1000 * s for s in range(args.seeds)],
                "steps": 20 if args.quick else load_run_config("multiturn").train.steps, "variants": VARIANTS}
    tables = {"accuracy": rows, "training": training}
    path = record(AREA, {**settings, "threads": THREADS}, raw, tables, args.out, args.quick)
    plot({r["model"]: {k: r[f"k{k}"]["mean"] if r[f"k{k}"] else None for k in TURNS} for r in rows},
         RESULTS_DIR / f"{AREA}{'.quick' if args.quick else ''}.png")
    print_recorded(tables, TABLES[AREA], TITLES, settings, path)


if __name__ == "__main__":
    main()
