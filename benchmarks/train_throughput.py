"""Training throughput of the quickstart model: fp32 vs bf16 autocast vs torch.compile, recorded.

Every variant runs in one process on the same batches: a warm-up step (which includes compilation),
then timed steps (forward, backward, fused AdamW step); the table shows the median step's tokens/s
with the spread of the steps, MFU against the bf16 matrix-product peak measured in the same run,
and the speed-up over fp32 eager. An ablation runs bf16 with the naive cross-entropy that
materialises all logits instead of lmforge's chunked fused loss. The variants are measured in
`--rounds` interleaved rounds, so a slow spell of the machine does not fall on one variant only.

    python benchmarks/train_throughput.py            # about 4 minutes on 2 cores
    python benchmarks/train_throughput.py --quick    # under a minute
"""

from __future__ import annotations

from common import parser, print_table, timings  # first: pins the thread pools before torch loads

import time

import torch
from record import record, spread
from render import cells
from tables import TABLES

import lmforge.model.transformer as transformer_module
from lmforge.config import load_run_config
from lmforge.device import autocast, measure_peak_flops
from lmforge.model.transformer import Transformer, flops_per_token
from lmforge.ops.cross_entropy import linear_cross_entropy, linear_cross_entropy_reference
from lmforge.optim import build_optimizer

VARIANTS = (  # name, precision, compiled, fused cross-entropy
    ("fp32 eager", "fp32", False, True),
    ("bf16 autocast eager", "bf16", False, True),
    ("bf16 autocast + torch.compile", "bf16", True, True),
    ("bf16 eager, naive cross-entropy", "bf16", False, False),
)


def naive_loss(hidden, weight, targets, ignore_index=-100, compute_dtype=None):
    return linear_cross_entropy_reference(hidden, weight, targets, ignore_index)


class Variant:
    """One training set-up, built once; `step()` runs a training step on the next batch."""

    def __init__(self, cfg, precision: str, compiled: bool, fused: bool, batches):
        torch.manual_seed(0)
        self.model = Transformer(cfg.model)
        self.opt = build_optimizer(self.model, cfg.train)
        self.forward = torch.compile(self.model) if compiled else self.model
        self.precision, self.loss_fn, self.batches, self.i = precision, linear_cross_entropy if fused else naive_loss, batches, 0

    def step(self) -> None:
        x, y = self.batches[self.i % len(self.batches)]
        self.i += 1
        transformer_module.linear_cross_entropy = self.loss_fn
        try:
            with autocast(torch.device("cpu"), self.precision):
                loss = self.forward(x, targets=y)
            loss.backward()
        finally:
            transformer_module.linear_cross_entropy = linear_cross_entropy
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the variants (default 3)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant and round (default 5)")
    args = p.parse_args()
    rounds, steps = (1, 3) if args.quick else (args.rounds, args.steps)
    cfg = load_run_config("quickstart", ["model.vocab_size=4096"])
    g = torch.Generator().manual_seed(0)
    shape = (cfg.train.batch_size, cfg.train.seq_len)
    batches = [(torch.randint(0, 4096, shape, generator=g), torch.randint(0, 4096, shape, generator=g)) for _ in range(4)]
    peaks = {p: [measure_peak_flops(torch.device("cpu"), p, size=2048, seconds=1.0) for _ in range(3)] for p in ("fp32", "bf16")}
    variants, first, steps_s = {}, {}, {name: [] for name, *_ in VARIANTS}
    for name, precision, compiled, fused in VARIANTS:
        variants[name] = Variant(cfg, precision, compiled, fused, batches)
        t = time.perf_counter()
        variants[name].step()  # includes compilation
        first[name] = time.perf_counter() - t
        print(f"  {name}: first step {first[name]:.1f} s", flush=True)
    for r in range(rounds):
        for name, variant in variants.items():
            steps_s[name] += timings(variant.step, repeats=steps, warmup=1)
        print(f"  round {r + 1}/{rounds} measured", flush=True)
    tokens = shape[0] * shape[1]
    flops = flops_per_token(variants["fp32 eager"].model, cfg.train.seq_len)
    bf16_peak = max(peaks["bf16"])
    rows = []
    for name, precision, compiled, fused in VARIANTS:
        rates = [tokens / s for s in steps_s[name]]
        rows.append({"variant": name, "precision": precision, "compiled": compiled, "fused_cross_entropy": fused,
                     "tokens_per_s": spread(rates), "gflops": spread([r * flops / 1e9 for r in rates]),
                     "mfu": spread([r * flops / bf16_peak for r in rates]), "first_step_s": first[name],
                     "fp32": name == "fp32 eager"})
    summary = {"throughput": rows}
    settings = {"throughput": {"model": "quickstart, vocabulary 4096", "batch": shape[0], "seq_len": shape[1],
                               "rounds": rounds, "steps_per_round": steps, "flops_per_token": flops,
                               "peak_gflops": {p: max(v) / 1e9 for p, v in peaks.items()}}}
    raw = {"throughput": {"step_seconds": steps_s, "first_step_seconds": first,
                          "peak_flops": peaks}}
    print(f"\nquickstart model, batch {shape[0]} x {shape[1]} tokens, {rounds} x {steps} steps per variant; "
          f"MFU against the measured bf16 peak {bf16_peak / 1e9:.0f} GFLOP/s (fp32 {max(peaks['fp32']) / 1e9:.0f})")
    spec = TABLES["train-throughput"]["throughput"]
    print_table(cells(spec, rows), [(c.header, c.header, "s") for c in spec])
    path = record("train-throughput", settings, raw, summary, path=args.out, quick=args.quick)
    print(f"recorded in {path}")


if __name__ == "__main__":
    main()
