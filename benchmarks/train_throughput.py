"""Training throughput of the small reference model (configs/small.toml): fp32 vs bf16 autocast vs torch.compile, recorded.

Every variant runs in one process on the same batches: a warm-up step (which includes compilation),
then timed steps (forward, backward, fused AdamW step); the table shows the median step's tokens/s
with the spread of the steps, MFU against the matrix-product peak of the training precision measured
in the same run, and the speed-up over fp32 eager. The training precision is what
`train.precision = "auto"` picks: bf16 autocast where the CPU's bf16 products are native (AVX-512
BF16, AMX), else fp32 (elsewhere bf16 products are several times slower than fp32, so its variants
are left out). An ablation runs it with the naive cross-entropy that materialises all logits
instead of lmforge's chunked fused loss. The variants are measured in
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
from lmforge.device import autocast, measure_peak_flops, resolve_precision
from lmforge.model.transformer import Transformer, flops_per_token
from lmforge.ops.cross_entropy import linear_cross_entropy, linear_cross_entropy_reference
from lmforge.optim import build_optimizer



def variants_for(precision: str) -> list[tuple[str, str, bool, bool]]:
    """(name, precision, compiled, fused cross-entropy) of each variant: fp32 eager, then the training precision
    `train.precision = "auto"` picks on this CPU (bf16 only where its products are native) eager, compiled,
    and with the naive cross-entropy."""
    label = "bf16 autocast" if precision == "bf16" else "fp32"
    eager = [("fp32 eager", "fp32", False, True)] + ([(f"{label} eager", precision, False, True)] if precision == "bf16" else [])
    return [*eager, (f"{label} + torch.compile", precision, True, True),
            (f"{label} eager, naive cross-entropy", precision, False, False)]


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
    cfg = load_run_config("small", ["model.vocab_size=4096"])
    g = torch.Generator().manual_seed(0)
    shape = (cfg.train.batch_size, cfg.train.seq_len)
    batches = [(torch.randint(0, 4096, shape, generator=g), torch.randint(0, 4096, shape, generator=g)) for _ in range(4)]
    cpu = torch.device("cpu")
    trained_in = resolve_precision("auto", cpu)
    plan = variants_for(trained_in)
    peaks = {p: [measure_peak_flops(cpu, p, size=2048, seconds=1.0) for _ in range(3)] for p in {"fp32", trained_in}}
    variants, first, steps_s = {}, {}, {name: [] for name, *_ in plan}
    for name, precision, compiled, fused in plan:
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
    peak = max(peaks[trained_in])
    rows = []
    for name, precision, compiled, fused in plan:
        rates = [tokens / s for s in steps_s[name]]
        rows.append({"variant": name, "precision": precision, "compiled": compiled, "fused_cross_entropy": fused,
                     "tokens_per_s": spread(rates), "gflops": spread([r * flops / 1e9 for r in rates]),
                     "mfu": spread([r * flops / peak for r in rates]), "first_step_s": first[name],
                     "fp32": name == "fp32 eager"})
    summary = {"throughput": rows}
    settings = {"throughput": {"model": "small, vocabulary 4096", "batch": shape[0], "seq_len": shape[1],
                               "rounds": rounds, "steps_per_round": steps, "flops_per_token": flops,
                               "training_precision": trained_in, "mfu_against": f"{trained_in} peak",
                               "peak_gflops": {p: max(v) / 1e9 for p, v in peaks.items()}}}
    raw = {"throughput": {"step_seconds": steps_s, "first_step_seconds": first,
                          "peak_flops": peaks}}
    print(f"\nsmall model, batch {shape[0]} x {shape[1]} tokens, {rounds} x {steps} steps per variant; "
          f"MFU against the measured {trained_in} matrix-product peak {peak / 1e9:.0f} GFLOP/s")
    spec = TABLES["train-throughput"]["throughput"]
    print_table(cells(spec, rows), [(c.header, c.header, "s") for c in spec])
    path = record("train-throughput", settings, raw, summary, path=args.out, quick=args.quick)
    print(f"recorded in {path}")


if __name__ == "__main__":
    main()
