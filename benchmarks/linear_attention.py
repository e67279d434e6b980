"""Linear attention (2Mamba2Furious family, Mamba-2) vs softmax attention: quality, recall, speed, memory.

Sections (all by default, or pick with --sections):
  quality  train the quickstart model with each mixer on stdlib (same seed, steps, about the same
           parameter count); validation loss and bits/byte, gap to softmax;
  recall   multi-query associative recall accuracy at two context lengths after the same 3,000 training
           steps (2-layer models, d=64, 2 heads; 8 and 24 key-value pairs);
  speed    one mixer layer, forward+backward time and peak memory vs sequence length, batch 1,
           8 heads of 64 (each measurement in a fresh process; memory is the growth of the process's
           peak resident set over the layer's forward and backward passes);
  decode   per-token decode latency and decoding-state bytes vs context length.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import machine, median_time, parser, print_table, write_json

VARIANTS = {
    "softmax": ["softmax"],
    "mamba2": ["mamba2"],
    "mamba2s": ["mamba2s"],
    "2mamba": ["2mamba"],
    "2mamba_e": ["2mamba_e"],
    "hybrid 3:1": ["2mamba", "2mamba", "2mamba", "softmax"],
}
RECALL_PAIRS = (8, 24)
LAYER_MIXERS = ["softmax", "mamba2s", "2mamba", "mamba2"]
BLOCK = 16  # cache block size of the decode measurement


def quality(quick: bool) -> list[dict]:
    from lmforge.config import load_run_config
    from lmforge.data.prepare import prepare_or_load
    from lmforge.train.trainer import train

    data_dir = Path("runs/benchmark-data")
    prepare_or_load(load_run_config("quickstart").data, data_dir, progress=False)
    work = Path(tempfile.mkdtemp(prefix="lmforge-linear-"))
    steps = 30 if quick else 300
    rows = []
    for name, mixers in VARIANTS.items():
        overrides = [f"model.mixers=[{','.join(mixers)}]", "model.mamba2_expand=1", f"train.steps={steps}",
                     "train.compile=false", f"train.out={work / name.replace(' ', '_')}", f"data.dir={data_dir}",
                     f"train.eval_every={steps}", f"train.warmup_steps={max(steps // 20, 1)}"]
        if quick:
            overrides += ["model.d_model=128", "model.n_heads=2", "train.seq_len=128", "train.batch_size=8"]
        t = time.perf_counter()
        r = train(load_run_config("quickstart", overrides), overwrite=True, progress=False, log=lambda s: None)
        rows.append({"variant": name, "params": r.params, "val_loss": r.final_eval["loss"], "val_bpb": r.final_eval["bpb"],
                     "seconds": time.perf_counter() - t})
        print(f"  quality {name}: val loss {r.final_eval['loss']:.4f}", flush=True)
    base = rows[0]["val_loss"]
    for r in rows:
        r["vs_softmax"] = r["val_loss"] / base - 1
    return rows


def recall(quick: bool) -> list[dict]:
    """MQAR accuracy after the same small training budget for every variant (2 layers, d=64, 2 heads)."""
    from lmforge.config import ModelConfig
    from lmforge.eval.recall import mqar_accuracy, mqar_batch
    from lmforge.model.transformer import Transformer

    steps, batch, vocab, lr = (200, 32, 64, 3e-3) if quick else (3000, 32, 64, 3e-3)
    rows = []
    for name, mixers in VARIANTS.items():
        row = {"variant": name}
        mixers = mixers[-2:]  # two layers: the hybrid keeps one linear and one softmax layer
        for pairs in RECALL_PAIRS:
            torch.manual_seed(0)
            model = Transformer(ModelConfig(vocab_size=vocab, d_model=64, n_layers=2, n_heads=2, mixers=mixers,
                                            mamba2_expand=1, max_seq_len=512))
            opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
            g = torch.Generator().manual_seed(1)
            for step in range(steps):
                for group in opt.param_groups:
                    group["lr"] = lr * min(1.0, (step + 1) / 50) * (1 - step / steps)
                x, y = mqar_batch(batch, pairs, vocab, g)
                model(x, targets=y).backward()
                opt.step()
                opt.zero_grad()
            x, y = mqar_batch(512, pairs, vocab, torch.Generator().manual_seed(99))
            row[f"acc_T{4 * pairs}"] = mqar_accuracy(model, x, y)
        rows.append(row)
        print(f"  recall {name} ({', '.join(mixers)}): {row}", flush=True)
    return rows


def measure_layer(mixer: str, t: int) -> dict:
    """Forward+backward of one mixer layer (run in its own process)."""
    from lmforge.config import ModelConfig
    from lmforge.model.mixers import build_mixer

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=8, d_model=512, n_heads=8, n_layers=1, mixers=[mixer], mamba2_expand=1, max_seq_len=t)
    layer = build_mixer(mixer, cfg, 0)
    if hasattr(layer, "reset_mixer_parameters"):
        layer.reset_mixer_parameters()
    x = torch.randn(1, t, 512, requires_grad=True)
    positions = torch.arange(t)[None]

    def step():
        layer(x, positions, None).sum().backward()
        x.grad = None

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds = median_time(step, repeats=3 if t <= 4096 else 1, warmup=1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "peak_mb": (peak - before) / 1024}


def speed(quick: bool) -> list[dict]:
    lengths = [512, 1024, 2048] if quick else [512, 1024, 2048, 4096, 8192, 16384]
    rows = []
    for t in lengths:
        row = {"T": t}
        for mixer in LAYER_MIXERS:
            out = subprocess.run([sys.executable, __file__, "--measure-layer", mixer, str(t)], capture_output=True, text=True)
            if out.returncode:
                raise RuntimeError(out.stderr)
            m = json.loads(out.stdout.strip().splitlines()[-1])
            row[f"{mixer}_s"], row[f"{mixer}_mb"] = m["seconds"], m["peak_mb"]
        for mixer in LAYER_MIXERS[1:]:
            row[f"{mixer}_speedup"] = row["softmax_s"] / row[f"{mixer}_s"]
        rows.append(row)
        print(f"  speed T={t}: " + ", ".join(f"{m} {row[m + '_s']:.3f}s/{row[m + '_mb']:.0f}MB" for m in LAYER_MIXERS), flush=True)
    return rows


@torch.no_grad()
def decode(quick: bool) -> list[dict]:
    from lmforge.config import ModelConfig
    from lmforge.model.mixers import build_mixer
    from lmforge.model.step import Memory, build_step

    lengths = [512, 2048] if quick else [1024, 4096, 16384]
    rows = []
    for mixer in LAYER_MIXERS:
        for t in lengths:
            cfg = ModelConfig(vocab_size=8, d_model=512, n_heads=8, n_layers=1, mixers=[mixer], mamba2_expand=1,
                              max_seq_len=t + 64)
            torch.manual_seed(0)
            layer = build_mixer(mixer, cfg, 0)
            if hasattr(layer, "reset_mixer_parameters"):
                layer.reset_mixer_parameters()
            spec = layer.cache_spec(torch.float32, BLOCK)
            n_blocks = -(-(t + 64) // BLOCK)
            memory, table = Memory([spec], n_blocks, BLOCK, 1), [list(range(n_blocks))]
            layer(torch.randn(1, t, 512), torch.arange(t)[None], build_step([t], [0], table, [0], memory))
            position = [t]

            def step():
                p = position[0]
                layer(torch.randn(1, 1, 512), torch.tensor([[p]]), build_step([1], [p], table, [0], memory))
                position[0] += 1

            latency = median_time(step, repeats=24, warmup=2)
            state_bytes = spec.sequence_bytes() + t * spec.token_bytes()
            rows.append({"mixer": mixer, "context": t, "ms_per_token": latency * 1e3, "state_mb": state_bytes / 2**20})
    return rows


def plot(speed_rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    ts = [r["T"] for r in speed_rows]
    for mixer in LAYER_MIXERS:
        a.plot(ts, [r[f"{mixer}_s"] for r in speed_rows], "o-", label=mixer)
        b.plot(ts, [r[f"{mixer}_mb"] for r in speed_rows], "o-", label=mixer)
    for ax, label in ((a, "forward+backward seconds"), (b, "peak memory growth (MB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("one mixer layer, batch 1, 8 heads x 64")
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--measure-layer":
        print(json.dumps(measure_layer(sys.argv[2], int(sys.argv[3]))))
        return
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sections", default="quality,recall,speed,decode")
    p.add_argument("--plot", default="linear_attention.png")
    args = p.parse_args()
    sections = args.sections.split(",")
    out = {"benchmark": "linear_attention", "quick": args.quick, "machine": machine()}
    if "quality" in sections:
        out["quality"] = quality(args.quick)
        print("\nquality: quickstart model, stdlib, same seed and steps")
        print_table(out["quality"], [("variant", "variant", "s"), ("params", "params", ",d"), ("val_loss", "val loss", ".4f"),
                                     ("val_bpb", "bits/byte", ".4f"), ("vs_softmax", "vs softmax", "+.2%"),
                                     ("seconds", "train s", ".0f")])
    if "recall" in sections:
        out["recall"] = recall(args.quick)
        print(f"\nmulti-query associative recall accuracy ({' and '.join(map(str, RECALL_PAIRS))} key-value pairs)")
        print_table(out["recall"], [("variant", "variant", "s")] + [(f"acc_T{4 * n}", f"T={4 * n}", ".1%") for n in RECALL_PAIRS])
    if "speed" in sections:
        out["speed"] = speed(args.quick)
        print("\none layer forward+backward, batch 1, 8 heads x 64: seconds, peak MB, speed-up over softmax (SDPA)")
        cols = [("T", "T", "d")] + [(f"{m}_s", f"{m} s", ".3f") for m in LAYER_MIXERS] + \
               [(f"{m}_mb", f"{m} MB", ".0f") for m in LAYER_MIXERS] + [(f"{m}_speedup", f"{m} x", ".2f") for m in LAYER_MIXERS[1:]]
        print_table(out["speed"], cols)
        plot(out["speed"], args.plot)
        print(f"plot: {args.plot}")
    if "decode" in sections:
        out["decode"] = decode(args.quick)
        print("\ndecode: one layer, per-token latency and state size vs context")
        print_table(out["decode"], [("mixer", "mixer", "s"), ("context", "context", "d"), ("ms_per_token", "ms/token", ".3f"),
                                    ("state_mb", "state MB", ".2f")])
    write_json(args.out, out)


if __name__ == "__main__":
    main()
