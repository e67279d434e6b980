"""Sparse attention (SpargeAttention2's block rule) against dense attention: speed, mask rules, distillation.

Sections (all by default, or pick with --sections); each records its tables in
benchmarks/results/sparse-attention.json when it ends (the other sections' tables stay, each with the
commit and date it was measured at) and prints the table it recorded:
  speed    one attention call, batch 1, 8 heads of 64, blocks of 64 x 64, random inputs, T = 2k-16k: the
           compiled FlexAttention kernel (forward; PyTorch has no CPU backward for it) and the gathered-blocks
           SDPA kernel (forward, forward+backward) against PyTorch's fused causal SDPA, at top-k fractions
           0.2 / 0.1 / 0.05, and the time of mask prediction. Each timing: 5 repeats after a warm-up that
           also compiles (3 repeats where one run takes over 10 s).
  masks    relative L1 error of the attention output against dense causal attention on real activations,
           every layer, T = 2,048, blocks of 32: the small reference model (configs/small.toml) on held-out stdlib code and
           SmolLM2-135M on English prose (when pulled). The top-k rule alone, the top-p rule alone and
           their union, each rule's thresholds bisected per layer to 90% block sparsity on one window,
           then measured on 5 other windows (mean ± std over those windows).
  quality  a dense small reference model (300 steps of 4 x 1,024 stdlib tokens) switched to the sparse
           mixer (blocks of 16, top-k 0.03, top-p 0.05: about 90% block sparsity), then --steps steps of plain
           next-token fine-tuning, of distillation (KL to the frozen dense model), of distillation plus the
           residual-stream MSE (weight 1), and the control: the dense model fine-tuned the same steps.
           3 seeds (the fine-tuning's data order); validation loss on the whole held-out split, as the
           trainer's final evaluation computes it.
           Recorded as table quality (quality_<steps> for another --steps).

The dense model of masks and quality is trained once and kept in runs/benchmark-sparse/ (or pass
--checkpoint). Full recording on 2 quiet cores, one section per command:
    python benchmarks/sparse_attention.py --sections speed      # about 10 minutes
    python benchmarks/sparse_attention.py --sections masks      # about 5 minutes (about 7 more the first time: data, dense model)
    python benchmarks/sparse_attention.py --sections quality    # about 45 minutes (--steps 200; AVX2: about 2 hours)
--steps 300 takes about an hour and records table quality_300; --steps 1000 about three hours. With --work DIR
each finished quality run is kept there, and a later run with the same settings and dense model reuses it.
--quick runs every section small (shorter sequences, one top-k fraction, 3 repeats; a tiny dense model on a
smaller vocabulary and held-out split, 10 fine-tuning steps, 2 seeds; no SmolLM2) and records
benchmarks/results/sparse-attention.quick.json.
"""

from __future__ import annotations

from common import THREADS  # first: it pins the thread pools before torch is imported

import functools
import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import parser, print_table, timings
from record import over_seeds, record, reuse, separated, spread
from render import cells
from tables import TABLES
from tables.sparse_attention import QUALITY

from lmforge.checkpoint import load_checkpoint
from lmforge.config import load_run_config
from lmforge.data.loader import eval_windows
from lmforge.data.prepare import prepare_or_load
from lmforge.data.readers import english_passage
from lmforge.device import autocast, resolve_precision
from lmforge.eval.perplexity import evaluate
from lmforge.interop.load import load_model
from lmforge.interop.registry import model_path
from lmforge.model.mixers.softmax import heads_first
from lmforge.model.transformer import Transformer
from lmforge.ops.block_sparse import (
    block_sparse_attention,
    block_sparse_attention_flex,
    block_sparsity,
    lagged_query_means,
    predict_block_mask,
)
from lmforge.train.distill import distill
from lmforge.train.trainer import train

AREA = "sparse-attention"
SPEED_BLOCK = 64
LONG_RUN_S = 10.0  # timings of runs longer than this take 3 repeats
TINY = 1e-9  # a threshold that turns a rule off (top-k keeps ceil(TINY * n) = 1 block; top-p one block)
RUNS = Path(__file__).resolve().parent.parent / "runs"
DENSE_DIR = RUNS / "benchmark-sparse"
SEEDS = (0, 1, 2)
DEFAULT_STEPS = 200  # of the quality section (3 seeds x 4 variants in under an hour); others record quality_<steps>
TITLES = {
    "speed": "attention speed, batch 1, 8 heads x 64, blocks of 64: seconds, medians (min-max) of the repeats",
    "masks": "mask rules at 90% block sparsity (tuned on one window), T={t}, blocks of {block}: relative L1 error",
    "quality": "validation loss after {steps} steps, {seeds} seeds, at {sparsity:.0%} block sparsity",
}


def record_section(name: str, settings: dict, raw: dict, tables: dict[str, list[dict]], args) -> None:
    """Record a section's tables (keeping the other sections') and print them as they will render."""
    path = record(AREA, {name: {"threads": THREADS, **settings}}, {name: raw}, tables, args.out, args.quick,
                  keep_others=True)
    for table, rows in tables.items():
        spec = TABLES[AREA].get(table, QUALITY)
        print(f"\n{TITLES[name].format(**settings)}")
        print_table(cells(spec, rows), [(c.header, c.header, "s") for c in spec])
    print(f"(recorded in {path})", flush=True)


# speed


def repeat_times(fn, repeats: int) -> list[float]:
    """Seconds of each timed run of `fn` after one warm-up run (which compiles): `repeats` runs, 3 when a run
    takes over LONG_RUN_S."""
    fn()
    first = timings(fn, 1, warmup=0)
    return first + timings(fn, (3 if first[0] > LONG_RUN_S else repeats) - 1, warmup=0)


def forward_backward(attention, q, k, v):
    """A closure running attention(q, k, v) forward and backward (on leaf copies that take gradients)."""
    leaves = [x.detach().clone().requires_grad_() for x in (q, k, v)]

    def run() -> None:
        for x in leaves:
            x.grad = None
        attention(*leaves).sum().backward()

    return run


def speed(args) -> None:
    """Sparse kernels against dense SDPA at several lengths and top-k fractions."""
    quick, repeats = args.quick, args.repeats
    lengths, fractions = ((1024, 2048), (0.1,)) if quick else ((2048, 4096, 8192, 16384), (0.2, 0.1, 0.05))
    b = SPEED_BLOCK
    rows, raw = [], {}
    torch.manual_seed(0)
    for t in lengths:
        q, k, v = (torch.randn(1, 8, t, 64) for _ in range(3))
        dense = {
            "dense_fwd": repeat_times(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), repeats),
            "dense_fwdbwd": repeat_times(
                forward_backward(lambda *x: F.scaled_dot_product_attention(*x, is_causal=True), q, k, v), repeats
            ),
        }
        for top_k in fractions:
            mask = predict_block_mask(lagged_query_means(q, b), k, b, b, top_k, TINY, True)
            times = {
                **dense,
                "predict": repeat_times(lambda: predict_block_mask(lagged_query_means(q, b), k, b, b, top_k, TINY, True),
                                        repeats),
                "flex_fwd": repeat_times(lambda: block_sparse_attention_flex(q, k, v, mask, b, b), repeats),
                "gather_fwd": repeat_times(lambda: block_sparse_attention(q, k, v, mask, b, b), repeats),
                "gather_fwdbwd": repeat_times(
                    forward_backward(lambda *x: block_sparse_attention(*x, mask, b, b), q, k, v), repeats
                ),
            }
            raw[f"{t}/{top_k}"] = times
            rows.append({"T": t, "top_k": top_k, "sparsity": block_sparsity(mask, t, b, b),
                         **{key: spread(values) for key, values in times.items()}})
            print(f"  T={t} top-k {top_k}: flex {rows[-1]['flex_fwd']['median']:.4f} s, "
                  f"dense {rows[-1]['dense_fwd']['median']:.4f} s", flush=True)
    settings = {"lengths": list(lengths), "top_k": list(fractions), "block": b, "heads": 8, "head_dim": 64,
                "repeats": repeats, "long_run_s": LONG_RUN_S}
    record_section("speed", settings, raw, {"speed": rows}, args)


# masks


def bisect(fn, target: float, lo: float, hi: float, steps: int = 18) -> float:
    """The argument in [lo, hi] (geometric bisection) where the decreasing function fn crosses `target`."""
    for _ in range(steps):
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if fn(mid) > target else (lo, mid)
    return (lo * hi) ** 0.5


@torch.no_grad()
def layer_inputs(model: Transformer, ids: torch.Tensor):
    """q, k, v [B, H, T, d] of every layer on the token ids (`project` gives [B, T, H, d]; GQA heads expanded)."""
    positions = torch.arange(ids.shape[1])[None]
    for layer, h in zip(model.layers, model.hidden_states(ids)[:-1]):
        q, k, v = (heads_first(x) for x in layer.mixer.project(layer.mixer_norm(h), positions))
        groups = q.shape[1] // k.shape[1]
        yield q, k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)


def tuned_rules(q, k, block: int, target: float) -> dict[str, tuple[float, float]]:
    """(top_k, top_p) of each rule bisected to `target` block sparsity on these activations. The union takes
    half the top-k-only fraction and tunes top-p on top of it."""
    summary = lagged_query_means(q, block)

    def sparsity(top_k: float, top_p: float) -> float:
        return block_sparsity(predict_block_mask(summary, k, block, block, top_k, top_p, True), q.shape[-2], block, block)

    k_only = bisect(lambda x: sparsity(x, TINY), target, 1e-4, 1.0)
    p_only = bisect(lambda x: sparsity(TINY, x), target, 1e-6, 1.0)
    p_union = bisect(lambda x: sparsity(k_only / 2, x), target, 1e-6, 1.0)
    return {"top-k only": (k_only, TINY), "top-p only": (TINY, p_only), "top-k + top-p": (k_only / 2, p_union)}


@torch.no_grad()
def rule_errors(q, k, v, block: int, rules: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """(relative L1 error against dense causal attention, block sparsity) of each rule."""
    dense = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    summary = lagged_query_means(q, block)
    out = {}
    for rule, (top_k, top_p) in rules.items():
        mask = predict_block_mask(summary, k, block, block, top_k, top_p, True)
        sparse = block_sparse_attention(q, k, v, mask, block, block)
        out[rule] = (float((sparse - dense).abs().sum() / dense.abs().sum()), block_sparsity(mask, q.shape[-2], block, block))
    return out


def model_rules(model: Transformer, windows: list[torch.Tensor], block: int, target: float) -> dict[str, list]:
    """Per rule, (error, sparsity) means over layers for each window after the first, with thresholds tuned
    per layer on the first."""
    rules = [tuned_rules(q, k, block, target) for q, k, _ in layer_inputs(model, windows[0][None])]
    per_window = {rule: [] for rule in rules[0]}
    for ids in windows[1:]:
        layers = [rule_errors(q, k, v, block, r) for (q, k, v), r in zip(layer_inputs(model, ids[None]), rules)]
        for rule in per_window:
            values = [layer[rule] for layer in layers]
            per_window[rule].append([sum(e for e, _ in values) / len(values), sum(s for _, s in values) / len(values)])
    return per_window


def ranking(a: dict, b: dict) -> str:
    """How error summary a compares with b: lower or higher where `separated`, else within the spread."""
    if not separated(a, b):
        return "within the spread"
    return "lower" if a["mean"] < b["mean"] else "higher"


def mask_models(quick: bool, t: int, n_windows: int, checkpoint: Path) -> dict[str, tuple[Transformer, list[torch.Tensor]]]:
    """The models and their token windows: the small reference model on held-out stdlib code, SmolLM2 on prose."""
    dense = load_checkpoint(checkpoint)
    val = torch.as_tensor(benchmark_data(quick).shard("val").tokens[: n_windows * t].astype("int64"))
    models = {"small model (code)": (dense.model.eval(), list(val.view(n_windows, t)))}
    if model_path("smollm2-135m").is_file() and not quick:
        smol = load_model("smollm2-135m")
        ids = torch.tensor(smol.tokenizer.encode(english_passage(12 * n_windows * t))[: n_windows * t])
        models["SmolLM2-135M (English)"] = (smol.model.eval(), list(ids.view(n_windows, t)))
    else:
        print("  SmolLM2-135M skipped (quick run, or not pulled: `lmforge pull smollm2-135m`)", flush=True)
    return models


def masks(args, checkpoint: Path) -> None:
    """Top-k, top-p and their union at equal block sparsity, on real activations."""
    quick = args.quick
    t, target, n_windows = (1024, 0.9, 3) if quick else (2048, 0.9, 6)
    block = t // 64  # 64 query blocks: 90% is above the floor that the diagonal and sink blocks set
    rows, raw = [], {}
    for name, (model, windows) in mask_models(quick, t, n_windows, checkpoint).items():
        per_window = model_rules(model, windows, block, target)
        raw[name] = per_window
        errors = {rule: over_seeds([e for e, _ in values]) for rule, values in per_window.items()}
        for rule, values in per_window.items():
            rows.append({"model": name, "rule": rule, "error": errors[rule], "sparsity": over_seeds([s for _, s in values]),
                         "vs_top_k": None if rule == "top-k only" else ranking(errors[rule], errors["top-k only"])})
        print(f"  {name}: " + ", ".join(f"{r} {e['mean']:.4f}" for r, e in errors.items()), flush=True)
    settings = {"t": t, "block": block, "target_sparsity": target, "tuning_windows": 1, "windows": n_windows - 1,
                "checkpoint": str(checkpoint)}
    record_section("masks", settings, raw, {"masks": rows}, args)


# quality


def data_overrides(quick: bool) -> list[str]:
    """The small config's data (stdlib, BPE 4,096), prepared once in runs/benchmark-data; with --quick a smaller
    vocabulary and held-out split (runs/benchmark-data-quick, as the linear attention benchmark's)."""
    if quick:
        return [f"data.dir={RUNS / 'benchmark-data-quick'}", "data.vocab_size=1024", "data.tokenizer_sample_bytes=2000000",
                "data.val_bytes=8000"]
    return [f"data.dir={RUNS / 'benchmark-data'}"]


def benchmark_data(quick: bool):
    """The prepared data of `data_overrides`."""
    cfg = load_run_config("small", data_overrides(quick)).data
    return prepare_or_load(cfg, Path(cfg.dir), progress=False)


def dense_checkpoint(quick: bool) -> Path:
    """The dense small reference model every sparse variant starts from: trained once, then reused while its
    settings match (runs/benchmark-sparse/dense[-quick])."""
    seq, steps = (256, 40) if quick else (1024, 300)
    overrides = [*data_overrides(quick), f"train.seq_len={seq}", "train.batch_size=4", "model.max_seq_len=2048",
                 "train.compile=false", "train.eval_every=0", f"train.steps={steps}"]
    if quick:
        overrides += ["model.d_model=64", "model.n_heads=2"]
    out = DENSE_DIR / ("dense-quick" if quick else "dense")
    done = out / "benchmark-settings.json"
    if done.is_file() and json.loads(done.read_text()) == overrides:
        return out
    print(f"  training the dense model ({steps} steps) in {out}", flush=True)
    benchmark_data(quick)
    train(load_run_config("small", overrides + [f"train.out={out}"]), overwrite=True, progress=False,
          log=lambda s: None)
    done.write_text(json.dumps(overrides))
    return out


def sparse_model(dense: Transformer, block: int, top_k: float, top_p: float) -> Transformer:
    """The dense weights with every layer's mixer switched to `sparse` (no training)."""
    cfg = dense.cfg
    model = Transformer(type(cfg)(**{**cfg.__dict__, "mixers": ["sparse"], "sparse_block_q": block, "sparse_block_k": block,
                                     "sparse_top_k": top_k, "sparse_top_p": top_p}))
    model.load_state_dict(dense.state_dict())
    return model


def validation_loss(model: Transformer, seq: int, quick: bool) -> float:
    """Loss over the whole held-out split, evaluated as the trainer's final evaluation is (windows of `seq`,
    batches of 4, the "auto" precision), so it compares with the fine-tuned variants' own final losses."""
    data = benchmark_data(quick)
    cpu = torch.device("cpu")
    precision = resolve_precision("auto", cpu)
    windows = eval_windows(data.shard("val").tokens, seq)
    return evaluate(model, windows, data.tokenizer.token_byte_lengths(), 4, lambda: autocast(cpu, precision))["loss"]


@torch.no_grad()
def mask_sparsity(model: Transformer, seq: int, block: int, quick: bool) -> float:
    """Mean block sparsity of the sparse layers' masks on the first held-out window of `seq` tokens."""
    model(torch.as_tensor(benchmark_data(quick).shard("val").tokens[:seq].astype("int64"))[None])
    masks = [layer.mixer.last_mask for layer in model.layers]
    return sum(block_sparsity(m, seq, block, block) for m in masks) / len(masks)


VARIANTS = {  # key: (row label, mixer, loss, residual MSE weight)
    "finetuned": ("sparse, fine-tuned (next-token loss)", "sparse", "ce", 0.0),
    "distilled": ("sparse, distilled (KL to the dense model)", "sparse", "kl", 0.0),
    "distilled_mse": ("sparse, distilled, KL + residual-stream MSE (weight 1)", "sparse", "kl", 1.0),
    "control": ("control: dense, fine-tuned the same steps", "softmax", "ce", 0.0),
}


def quality(args, checkpoint: Path) -> None:
    """Fine-tuning against distillation (and its MSE variant) of the sparse model, with the dense control."""
    quick, steps = args.quick, args.steps
    seq, block, top_k, top_p = (256, 16, 0.06, 0.05) if quick else (1024, 16, 0.03, 0.05)
    lr = 2e-3
    work = Path(tempfile.mkdtemp(prefix="lmforge-sparse-"))
    dense = load_checkpoint(checkpoint).model
    untrained = sparse_model(dense, block, top_k, top_p)
    dense_loss, untrained_loss = validation_loss(dense, seq, quick), validation_loss(untrained, seq, quick)
    sparsity = mask_sparsity(untrained, seq, block, quick)
    overrides = [f"model.sparse_block_q={block}", f"model.sparse_block_k={block}", f"model.sparse_top_k={top_k}",
                 f"model.sparse_top_p={top_p}", f"train.steps={steps}", f"train.lr={lr}",
                 f"train.warmup_steps={max(1, steps // 10)}", f"train.seq_len={seq}", "train.batch_size=4",
                 "train.eval_every=0", "train.compile=false"]
    raw = {key: [] for key in VARIANTS}
    seeds = SEEDS[:2] if quick else SEEDS

    def run(key: str, mixer: str, loss: str, mse: float, seed: int) -> list:
        start = time.perf_counter()
        out = work / f"{key}-{seed}"
        result = distill(checkpoint, out, mixer, None, loss, mse, overrides + [f"train.seed={seed}"], progress=False)
        kept = mask_sparsity(load_checkpoint(out).model, seq, block, quick) if mixer == "sparse" else None
        shutil.rmtree(out)
        return [result.final_eval["loss"], kept, time.perf_counter() - start]

    try:
        for seed in seeds:
            for key, (_, mixer, loss, mse) in VARIANTS.items():
                settings = {"checkpoint": fingerprint(checkpoint), "overrides": overrides, "seed": seed}
                path = args.work / f"{key}-seed{seed}.json" if args.work else None
                raw[key].append(reuse(path, settings, functools.partial(run, key, mixer, loss, mse, seed)))
                print(f"  seed {seed} {key}: loss {raw[key][-1][0]:.4f} ({raw[key][-1][2]:.0f} s)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = quality_rows(dense_loss, untrained_loss, sparsity, raw)
    settings = {"steps": steps, "seeds": len(seeds), "sparsity": sparsity, "seq_len": seq, "batch_size": 4, "block": block,
                "top_k": top_k, "top_p": top_p, "lr": lr, "schedule": "wsd", "checkpoint": str(checkpoint)}
    record_section("quality", settings, {"dense": dense_loss, "untrained": untrained_loss, **raw},
                   {"quality" if steps == DEFAULT_STEPS else f"quality_{steps}": rows}, args)


def fingerprint(path: Path) -> str:
    """SHA-256 over the names and bytes of every file under `path`: which dense model a kept run started from."""
    digest = hashlib.sha256()
    for file in sorted(f for f in [path, *path.rglob("*")] if f.is_file()):
        digest.update(str(file.relative_to(path) if file != path else file.name).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def quality_rows(dense: float, untrained: float, sparsity: float, raw: dict[str, list]) -> list[dict]:
    """The table: each variant's loss over seeds, its excess over the dense model trained the same way (the
    teacher for distillation, the control for fine-tuning), and the share of the untrained sparse model's
    excess that it removes."""
    losses = {key: [r[0] for r in runs] for key, runs in raw.items()}
    initial = untrained - dense

    def excess_of(key: str) -> list[float]:
        reference = losses["control"] if VARIANTS[key][2] == "ce" else [dense] * len(losses[key])
        return [loss - ref for loss, ref in zip(losses[key], reference)]

    rows = [{"model": "dense (teacher)", "loss": over_seeds([dense])},
            {"model": "sparse, no training", "loss": over_seeds([untrained]), "sparsity": sparsity,
             "excess": over_seeds([initial]), "reference": "teacher"}]
    excess = {key: over_seeds(excess_of(key)) for key in ("finetuned", "distilled", "distilled_mse")}
    for key, summary in excess.items():
        rows.append({"model": VARIANTS[key][0], "loss": over_seeds(losses[key]),
                     "sparsity": over_seeds([r[1] for r in raw[key]])["mean"], "excess": summary,
                     "reference": "control" if key == "finetuned" else "teacher",
                     "removed": over_seeds([1 - e / initial for e in excess_of(key)]) if initial > 0 else None,
                     "vs_finetuned": None if key == "finetuned" else ranking(summary, excess["finetuned"])})
    rows.append({"model": VARIANTS["control"][0], "loss": over_seeds(losses["control"])})
    return rows


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sections", default="speed,masks,quality", help="comma-separated, from speed, masks, quality")
    p.add_argument("--steps", type=int, default=None, help=f"fine-tuning steps of the quality section (default {DEFAULT_STEPS}, 10 with --quick)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats in the speed section (default 5, 3 with --quick)")
    p.add_argument("--work", type=Path, default=None, help="keep each finished quality run's figures here and reuse "
                   "them, so an interrupted quality section resumes (default: keep nothing)")
    p.add_argument("--checkpoint", default=None, help="the dense small-model checkpoint (default: train one, kept in runs/benchmark-sparse)")
    args = p.parse_args()
    sections = args.sections.split(",")
    unknown = set(sections) - {"speed", "masks", "quality"}
    if unknown:
        p.error(f"unknown section: {', '.join(sorted(unknown))}")
    args.steps = args.steps or (10 if args.quick else DEFAULT_STEPS)
    args.repeats = args.repeats or (3 if args.quick else 5)
    if args.steps < 1 or args.repeats < 1:
        p.error("--steps and --repeats must be at least 1")
    if "speed" in sections:
        speed(args)
    if {"masks", "quality"} & set(sections):
        checkpoint = Path(args.checkpoint) if args.checkpoint else dense_checkpoint(args.quick)
        if "masks" in sections:
            masks(args, checkpoint)
        if "quality" in sections:
            quality(args, checkpoint)


if __name__ == "__main__":
    main()
