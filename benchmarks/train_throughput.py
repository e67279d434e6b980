"""Training throughput of the quickstart model: fp32 vs bf16 autocast vs torch.compile.

Runs every variant in one process on the same batches, prints tokens/s, MFU and the
speed-up over fp32 eager, and (as an ablation) bf16 with the naive cross-entropy that
materialises all logits instead of lmforge's chunked fused loss.
"""

from __future__ import annotations

import time

import torch
from common import machine, median_time, parser, print_table, write_json

import lmforge.model.transformer as transformer_module
from lmforge.config import load_run_config
from lmforge.device import autocast, measure_peak_flops
from lmforge.model.transformer import Transformer, flops_per_token
from lmforge.ops.cross_entropy import linear_cross_entropy, linear_cross_entropy_reference
from lmforge.optim import build_optimizer


def naive_loss(hidden, weight, targets, ignore_index=-100, compute_dtype=None):
    return linear_cross_entropy_reference(hidden, weight, targets, ignore_index)


def measure(cfg, precision: str, compiled: bool, loss_fn, steps: int, batches) -> dict:
    transformer_module.linear_cross_entropy = loss_fn
    torch.manual_seed(0)
    model = Transformer(cfg.model)
    opt = build_optimizer(model, cfg.train)
    forward = torch.compile(model) if compiled else model
    device = torch.device("cpu")
    state = {"i": 0}

    def step():
        x, y = batches[state["i"] % len(batches)]
        state["i"] += 1
        with autocast(device, precision):
            loss = forward(x, targets=y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t = time.perf_counter()
    step()  # includes compilation
    first = time.perf_counter() - t
    seconds = median_time(step, repeats=steps, warmup=1)
    tokens = cfg.train.batch_size * cfg.train.seq_len
    transformer_module.linear_cross_entropy = linear_cross_entropy
    return {"tokens_per_second": tokens / seconds, "step_seconds": seconds, "first_step_seconds": first,
            "flops_per_token": flops_per_token(model, cfg.train.seq_len)}


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    cfg = load_run_config("quickstart", ["model.vocab_size=4096"])
    steps = 5 if args.quick else 15
    g = torch.Generator().manual_seed(0)
    shape = (cfg.train.batch_size, cfg.train.seq_len)
    batches = [(torch.randint(0, 4096, shape, generator=g), torch.randint(0, 4096, shape, generator=g)) for _ in range(4)]
    variants = [
        ("fp32 eager", "fp32", False, linear_cross_entropy),
        ("bf16 autocast eager", "bf16", False, linear_cross_entropy),
        ("bf16 autocast + torch.compile", "bf16", True, linear_cross_entropy),
        ("bf16 eager, naive cross-entropy", "bf16", False, naive_loss),
    ]
    peaks = {p: measure_peak_flops(torch.device("cpu"), p, size=2048, seconds=1.0) for p in ("fp32", "bf16")}
    rows = []
    for name, precision, compiled, loss_fn in variants:
        r = measure(cfg, precision, compiled, loss_fn, steps, batches)
        r.update(variant=name, precision=precision, compiled=compiled,
                 mfu=r["tokens_per_second"] * r["flops_per_token"] / peaks["bf16"],
                 achieved_gflops=r["tokens_per_second"] * r["flops_per_token"] / 1e9)
        rows.append(r)
        print(f"  measured {name}", flush=True)
    base = rows[0]["tokens_per_second"]
    for r in rows:
        r["speedup_vs_fp32"] = r["tokens_per_second"] / base
    print(f"\nquickstart model, batch {shape[0]} x {shape[1]} tokens, median of {steps} steps; "
          f"MFU against the measured bf16 matmul peak {peaks['bf16'] / 1e9:.0f} GFLOP/s (fp32 peak {peaks['fp32'] / 1e9:.0f})")
    print_table(rows, [("variant", "variant", "s"), ("tokens_per_second", "tokens/s", ",.0f"),
                       ("achieved_gflops", "GFLOP/s", ".0f"), ("mfu", "MFU", ".1%"),
                       ("speedup_vs_fp32", "vs fp32", ".2f"), ("first_step_seconds", "first step s", ".1f")])
    write_json(args.out, {"benchmark": "train_throughput", "peak_flops": peaks, "rows": rows, "machine": machine()})


if __name__ == "__main__":
    main()
