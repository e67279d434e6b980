"""Linear attention (2Mamba2Furious family, Mamba-2) vs softmax attention: quality, recall, speed, memory, decode.

Mamba-2S, 2Mamba and 2Mamba-E run as their authors configure them (model.linear_variant="authors");
2Mamba also runs as lmforge first shipped it ("lmforge": output RMSNorm and decay bias), beside it.
Sections (all by default, or pick with --sections; each is recorded as soon as it ends, keeping the
others' earlier records, so sections can be run separately):
  quality  the small reference model (configs/small.toml) trained with each mixer on stdlib, same steps and data, 3 seeds:
           held-out loss and bits/byte, mean ± std; a gap to softmax is claimed only beyond the spread.
           Nothing is tuned here (the small config's settings for every variant), so the held-out split
           is only ever read for the reported figures;
  recall   multi-query associative recall (Zoology's layout) at two context lengths after the same training
           (2-layer models, d=64, 2 heads; 8 and 16 key-value pairs): the AdamW rate chosen per variant and size
           from 3 on a validation set (seed 0), then seeds 1-3 at that rate scored on a test set;
  speed    one mixer layer, forward+backward seconds vs sequence length, batch 1, 8 heads of 64:
           medians of 5 repeats (3 above 10 s) after a warm-up, with the spread;
  memory   the same layers' training memory, counted from what autograd saves for backward
           (benchmarks/memory.py: deterministic), plus the allocator's peak on a GPU;
  decode   per-token decode latency (median of 24, with the spread) and decoding-state bytes vs context.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

from common import THREADS, parser, print_table  # before torch: pins the thread pools

import torch
from memory import training_memory
from record import over_seeds, record, separated, spread
from render import cells
from tables import TABLES
from tables.linear_attention import LAYERS as LAYER_NAMES
from tables.linear_attention import RECALL_PAIRS

from lmforge.fileio import write_json
from lmforge.plotting import pyplot, save_figure

AREA = "linear-attention"
PLOT = Path(__file__).resolve().parent / "plots" / "linear_attention.png"
# name -> (mixers per layer, model.linear_variant)
VARIANTS = {
    "softmax": (["softmax"], "authors"),
    "mamba2": (["mamba2"], "authors"),
    "mamba2s": (["mamba2s"], "authors"),
    "2mamba": (["2mamba"], "authors"),
    "2mamba (lmforge)": (["2mamba"], "lmforge"),
    "2mamba_e": (["2mamba_e"], "authors"),
    "hybrid 3:1": (["2mamba", "2mamba", "2mamba", "softmax"], "authors"),
}
FAMILY = {"mamba2s", "2mamba", "2mamba_e"}  # the mixers model.linear_variant applies to
LAYERS = {name: VARIANTS[name] for name in LAYER_NAMES}
DECODERS = ("softmax", "mamba2s", "2mamba", "2mamba_e", "mamba2")
SEEDS = (0, 1, 2)
RECALL_RATES = (1e-3, 3e-3, 1e-2)  # AdamW rates swept per variant and task size on the sweep seed
RECALL_SWEEP_SEED, RECALL_SEEDS = 0, (1, 2, 3)  # the reported seeds train at the chosen rate
RECALL_VALIDATION, RECALL_TEST = 98, 99  # seeds of the 512-sequence sets the rate is chosen on and reported on
BLOCK = 16  # cache block size of the decode measurement
WIDTH, HEADS = 512, 8  # one layer of 8 heads of 64
TITLES = {
    "quality": "quality: small model, stdlib, {steps} steps, seeds {seeds}; held-out loss mean ± std",
    "recall": "multi-query associative recall accuracy after {steps} steps, seeds {seeds}",
    "speed": "one layer forward+backward seconds, batch 1, {heads} heads x 64, {threads} threads",
    "memory": "one layer training memory (saved for backward + parameters + gradients), batch 1, {heads} heads x 64",
    "memory_cuda": "one layer forward+backward: the CUDA allocator's peak above the layer itself, {heads} heads x 64",
    "decode": "decode: one layer, per-token latency and state size vs context, {threads} threads",
}


class Run:
    """Settings, raw measurements and summary tables of this run, recorded after every section."""

    def __init__(self, args):
        self.args, self.quick = args, args.quick
        self.settings: dict = {"threads": THREADS, "quick": self.quick}
        self.raw: dict = {}
        self.summary: dict = {}

    def add(self, section: str, settings: dict, raw, tables: dict[str, list[dict]]) -> Path:
        """Record a section's tables (keeping the other sections' earlier records) and print them."""
        self.settings[section], self.raw[section] = settings, raw
        self.summary.update(tables)
        path = record(AREA, self.settings, self.raw, self.summary, self.args.out, self.quick, keep_others=True)
        for name, rows in tables.items():
            spec = TABLES[AREA][name]
            print(f"\n{TITLES[name].format(**{'threads': THREADS, 'heads': HEADS, **settings})}")
            print_table(cells(spec, rows), [(c.header, c.header, "s") for c in spec])
        print(f"(recorded in {path})", flush=True)
        return path


def layer_config(mixers: list[str], variant: str, **kw):
    from lmforge.config import ModelConfig

    return ModelConfig(mixers=mixers, linear_variant=variant, mamba2_expand=1, **kw)


# quality


def quality_overrides(mixers: list[str], variant: str, seed: int, steps: int, out: Path, data_dir: Path, quick: bool) -> list[str]:
    """Quickstart's settings with this variant's mixers, seed and step budget (no evaluation before the end)."""
    overrides = [f"model.mixers=[{','.join(mixers)}]", f"model.linear_variant={variant}", "model.mamba2_expand=1",
                 f"train.steps={steps}", f"train.seed={seed}", "train.compile=false", f"train.out={out}",
                 f"data.dir={data_dir}", "train.eval_every=0", f"train.warmup_steps={max(steps // 20, 1)}",
                 "train.log_every=5"]
    if quick:  # a tiny model, vocabulary and held-out split
        overrides += ["model.d_model=64", "model.n_heads=2", "train.seq_len=64", "train.batch_size=8",
                      "data.vocab_size=1024", "data.tokenizer_sample_bytes=2000000", "data.val_bytes=8000"]
    return overrides


def train_curve(out: Path) -> list[list[float]]:
    """(step, training loss) pairs of a run's metrics.jsonl."""
    lines = (json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines())
    return [[m["step"], m["loss"]] for m in lines if "loss" in m]


def quality(run: Run) -> None:
    from lmforge.config import load_run_config
    from lmforge.data.prepare import prepare_or_load
    from lmforge.train.trainer import train

    steps, seeds = (10, SEEDS[:2]) if run.quick else (120, SEEDS)
    data_dir = Path("runs/benchmark-data-quick" if run.quick else "runs/benchmark-data")
    data_cfg = load_run_config("small", quality_overrides(["softmax"], "authors", 0, steps, Path(), data_dir, run.quick)).data
    prepare_or_load(data_cfg, data_dir, progress=False)  # once, before any run is timed
    raw, rows = {}, []
    for name, (mixers, variant) in VARIANTS.items():
        runs = []
        for seed in seeds:
            with tempfile.TemporaryDirectory(prefix="lmforge-linear-") as work:
                out = Path(work) / "run"
                overrides = quality_overrides(mixers, variant, seed, steps, out, data_dir, run.quick)
                t = time.perf_counter()
                r = train(load_run_config("small", overrides), overwrite=True, progress=False, log=lambda s: None)
                runs.append({"seed": seed, "params": r.params, "val_loss": r.final_eval["loss"], "val_bpb": r.final_eval["bpb"],
                             "eval_tokens": r.final_eval["tokens"], "seconds": time.perf_counter() - t,
                             "curve": train_curve(out)})
            print(f"  quality {name} seed {seed}: held-out loss {r.final_eval['loss']:.4f}", flush=True)
        raw[name] = runs
        configured = variant if FAMILY.intersection(mixers) else "-"
        rows.append({"variant": name, "mixers": ",".join(mixers), "linear_variant": configured, "params": runs[0]["params"],
                     "val_loss": over_seeds([r["val_loss"] for r in runs]), "val_bpb": over_seeds([r["val_bpb"] for r in runs]),
                     "softmax": name == "softmax"})
    base = rows[0]["val_loss"]
    for row in rows:
        row["vs_softmax"] = over_seeds([a / b - 1 for a, b in zip(row["val_loss"]["values"], base["values"])])
        row["ranked_vs_softmax"] = ranking(row["val_loss"], base) if not row["softmax"] else "-"
    settings = {"steps": steps, "seeds": list(seeds), "config": "small", "data_dir": str(data_dir),
                "overrides": quality_overrides(["<mixers>"], "<variant>", 0, steps, Path("<out>"), data_dir, run.quick)}
    path = run.add("quality", settings, raw, {"quality": rows})
    if not run.quick or run.args.plot:
        plot_curves(path, Path(run.args.plot) if run.args.plot else PLOT)


def ranking(a: dict, softmax: dict) -> str:
    """How a variant's held-out loss compares with softmax's: a ranking only where the seeds separate them."""
    if not separated(a, softmax):
        return "within spread"
    return "worse" if a["mean"] > softmax["mean"] else "better"


def plot_curves(results: Path, path: Path) -> None:
    """Training-loss curves (mean over seeds) of each variant, from the recorded quality section; written atomically."""
    recorded = json.loads(results.read_text())
    fig, ax = pyplot().subplots(figsize=(7, 4.5), dpi=110)
    for name, runs in recorded["raw"]["quality"].items():
        curves = [dict(map(tuple, r["curve"])) for r in runs]
        steps = sorted(set.intersection(*(set(c) for c in curves)))
        ax.plot(steps, [statistics.fmean(c[s] for c in curves) for s in steps], label=name)
    settings = recorded["settings"]["quality"]
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (nats/token), mean over seeds")
    ax.set_title(f"small model on stdlib, {settings['steps']} steps, seeds {settings['seeds']}")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)
    print(f"plot: {path}")


# recall


def recall(run: Run) -> None:
    """MQAR accuracy after the same training budget for every variant (2 layers, d=64, 2 heads): the learning rate
    chosen per variant and task size on a validation set (seed 0), then 3 other seeds scored on a test set."""
    steps, batch, vocab = (20, 16, 64) if run.quick else (2000, 32, 64)
    rates, seeds = (RECALL_RATES[:2], RECALL_SEEDS[:1]) if run.quick else (RECALL_RATES, RECALL_SEEDS)
    cells = [(name, pairs) for name in VARIANTS for pairs in RECALL_PAIRS]
    with recall_workers() as pool:
        sweep = dict(zip([(cell, lr) for cell in cells for lr in rates], pool.map(
            recall_run, [(*cell, lr, RECALL_SWEEP_SEED, steps, batch, vocab, run.args.work) for cell in cells
                         for lr in rates])))
        best = {cell: max(rates, key=lambda lr: sweep[cell, lr]["validation"]) for cell in cells}
        report = dict(zip([(cell, seed) for cell in cells for seed in seeds], pool.map(
            recall_run, [(*cell, best[cell], seed, steps, batch, vocab, run.args.work) for cell in cells
                         for seed in seeds])))
    raw, rows = {}, []
    for name in VARIANTS:
        raw[name], row = {}, {"variant": name, "mixers": ",".join(VARIANTS[name][0][-2:])}
        for pairs in RECALL_PAIRS:
            cell, key = (name, pairs), f"T{3 * pairs}"
            accuracies = [report[cell, seed]["test"] for seed in seeds]
            raw[name][key] = {"sweep_validation": {str(lr): sweep[cell, lr]["validation"] for lr in rates},
                              "lr": best[cell], "test": accuracies}
            row[f"lr_{key}"], row[f"acc_{key}"] = best[cell], over_seeds(accuracies)
        rows.append(row)
        print(f"  recall {name}: {raw[name]}", flush=True)
    run.add("recall", {"steps": steps, "batch": batch, "vocab": vocab, "pairs": list(RECALL_PAIRS),
                       "rates": list(rates), "sweep_seed": RECALL_SWEEP_SEED, "seeds": list(seeds),
                       "validation_set_seed": RECALL_VALIDATION, "test_set_seed": RECALL_TEST,
                       "workers": THREADS, "threads_per_worker": 1}, raw, {"recall": rows})


def recall_workers():
    """THREADS one-thread processes: these models are too small for two threads to share one well."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(THREADS, mp_context=multiprocessing.get_context("spawn"), initializer=torch.set_num_threads,
                               initargs=(1,))


def recall_run(job: tuple) -> dict[str, float]:
    """Train one 2-layer model on fresh MQAR batches (AdamW, 50-step warm-up, linear decay), then score it on the
    validation and the test set (each 512 sequences, the same for every variant)."""
    from lmforge.eval.recall import mqar_accuracy, mqar_batch
    from lmforge.model.transformer import Transformer

    *settings, work = job
    name, pairs, lr, seed, steps, batch, vocab = settings
    done = work / ("recall-" + "-".join(str(v).replace(" ", "_") for v in settings) + ".json") if work else None
    if done and done.is_file():
        return json.loads(done.read_text())
    mixers, variant = VARIANTS[name]
    torch.manual_seed(seed)
    model = Transformer(layer_config(mixers[-2:], variant, vocab_size=vocab, d_model=64, n_layers=2, n_heads=2,
                                     max_seq_len=512))  # two layers: the hybrid keeps one linear and one softmax
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(1000 + seed)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 50) * (1 - step / steps)
        x, y = mqar_batch(batch, pairs, vocab, generator)
        model(x, targets=y).backward()
        opt.step()
        opt.zero_grad()
    accuracies = {split: mqar_accuracy(model, *mqar_batch(512, pairs, vocab, torch.Generator().manual_seed(set_seed)))
                  for split, set_seed in (("validation", RECALL_VALIDATION), ("test", RECALL_TEST))}
    if done:
        write_json(done, accuracies)
    return accuracies


# one layer: speed and memory


def build_layer(name: str, t: int):
    from lmforge.model.mixers import build_mixer

    mixers, variant = LAYERS[name]
    torch.manual_seed(0)
    layer = build_mixer(mixers[0], layer_config(mixers, variant, vocab_size=8, d_model=WIDTH, n_heads=HEADS, n_layers=1,
                                                max_seq_len=t), 0)
    if hasattr(layer, "reset_mixer_parameters"):
        layer.reset_mixer_parameters()
    return layer


def layer_times(name: str, t: int) -> list[float]:
    """Forward+backward seconds of one layer: 5 repeats after a warm-up, 3 when one takes over 10 s."""
    layer = build_layer(name, t)
    x = torch.randn(1, t, WIDTH, requires_grad=True)
    positions = torch.arange(t)[None]

    def step() -> float:
        start = time.perf_counter()
        layer(x, positions, None).sum().backward()
        x.grad = None
        return time.perf_counter() - start

    first = step()
    return [step() for _ in range(3 if first > 10 else 5)]


def speed(run: Run) -> None:
    lengths = [256, 512] if run.quick else [512, 1024, 2048, 4096, 8192, 16384]
    raw, rows = {}, []
    for t in lengths:
        row = {"T": t}
        for name in LAYERS:
            times = layer_times(name, t)
            raw[f"{name}@{t}"], row[name] = times, spread(times)
        rows.append(row)
        print(f"  speed T={t}: " + ", ".join(f"{n} {row[n]['median']:.3f}s" for n in LAYERS), flush=True)
    run.add("speed", {"lengths": lengths, "width": WIDTH, "heads": HEADS}, raw, {"speed": rows})


def memory(run: Run) -> None:
    lengths = [256, 512] if run.quick else [512, 1024, 2048, 4096, 8192, 16384]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    raw, rows, peaks = {}, [], []
    for t in lengths:
        row, peak = {"T": t}, {"T": t}
        for name in LAYERS:
            layer = build_layer(name, t).to(device)
            x = torch.randn(1, t, WIDTH, device=device, requires_grad=True)
            m = training_memory(layer, lambda: layer(x, torch.arange(t, device=device)[None], None).sum())
            raw[f"{name}@{t}"] = m
            row[name] = m["total_bytes"] / 2**20
            peak[name] = m["cuda_peak_bytes"] / 2**20 if m["cuda_peak_bytes"] is not None else None
        rows.append(row)
        peaks.append(peak)
        print(f"  memory T={t}: " + ", ".join(f"{n} {row[n]:.1f} MiB" for n in LAYERS), flush=True)
    tables = {"memory": rows, **({"memory_cuda": peaks} if device == "cuda" else {})}
    run.add("memory", {"lengths": lengths, "width": WIDTH, "heads": HEADS, "device": device}, raw, tables)


# decode


@torch.no_grad()
def decode_latencies(name: str, t: int) -> tuple[list[float], int]:
    """Seconds of each of 24 single-token decode steps after a prefill to `t` tokens, and the state's bytes."""
    from lmforge.model.step import Memory, build_step

    layer = build_layer(name, t + 64)
    spec = layer.cache_spec(torch.float32, BLOCK)
    n_blocks = -(-(t + 64) // BLOCK)
    memory, table = Memory([spec], n_blocks, BLOCK, 1), [list(range(n_blocks))]
    layer(torch.randn(1, t, WIDTH), torch.arange(t)[None], build_step([t], [0], table, [0], memory))
    times = []
    for p in range(t, t + 26):
        start = time.perf_counter()
        layer(torch.randn(1, 1, WIDTH), torch.tensor([[p]]), build_step([1], [p], table, [0], memory))
        times.append(time.perf_counter() - start)
    return times[2:], spec.sequence_bytes() + t * spec.token_bytes()  # the first two are warm-up


def decode(run: Run) -> None:
    lengths = [256, 1024] if run.quick else [1024, 4096, 16384]
    raw, rows = {}, []
    for name in DECODERS:
        for t in lengths:
            times, state = decode_latencies(name, t)
            raw[f"{name}@{t}"] = times
            rows.append({"mixer": name, "context": t, "ms_per_token": spread([s * 1e3 for s in times]),
                         "state_mib": state / 2**20})
    run.add("decode", {"lengths": lengths, "block": BLOCK, "width": WIDTH, "heads": HEADS}, raw, {"decode": rows})


SECTIONS = {"quality": quality, "recall": recall, "speed": speed, "memory": memory, "decode": decode}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    p.add_argument("--work", type=Path, default=None, help="keep each finished recall run's accuracies here and "
                   "reuse them, so an interrupted recall section resumes (default: keep nothing)")
    p.add_argument("--plot", default=None, help=f"loss-curve plot of the quality section (default {PLOT.name}; "
                                                 "a --quick run plots only when given)")
    args = p.parse_args()
    chosen = args.sections.split(",")
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        raise SystemExit(f"error: unknown section {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    run = Run(args)
    for name in chosen:
        SECTIONS[name](run)


if __name__ == "__main__":
    main()
