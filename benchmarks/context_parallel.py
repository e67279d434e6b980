"""Context and data parallelism on CPU ranks (gloo): what each rank keeps for the backward of an attention layer,
how long it takes, and what recomputation saves a linear layer at long context.

Sections:
  memory     one softmax attention layer (d 512, 16 heads of 32, 4 KV heads): the bytes each rank keeps for the
             backward (`benchmarks/memory.py`: every storage autograd saves, once, plus the layer input, which a
             recomputed group holds) against sequence length, for one process, Ulysses and UPipe at U = P over
             2 and 4 ranks; the longest sequence whose per-rank bytes fit --budget-mib, from the bytes per token
             (constant over the measured lengths: the kept bytes are linear in T, which the record checks);
  time       the same layer's forward+backward per step at --time-length: UPipe against Ulysses (goal: within
             15%), the slowest rank's time, median of repeats; the ranks share the machine's cores (each runs
             THREADS / P threads);
  recompute  one Mamba-2S layer against SDPA's at 16k (d 512, 8 heads of 64): bytes kept for the backward and
             forward+backward time, as it trains by default and with the layer recomputed in the backward
             (`train.recompute`); goal: at least 2x fewer bytes than SDPA's layer and at least 4x faster;
  data_parallel  `lmforge train small` for --ddp-steps steps in one process, and under torchrun over 2
             ranks with DDP and with FSDP2: tokens/s in all and per rank (the global batch is the same, each rank
             computes half of it), and the parameters, gradients and optimizer state each rank holds (counted).

    python benchmarks/context_parallel.py                    # every section (about 25 minutes on 2 cores)
    python benchmarks/context_parallel.py --sections memory  # one section, kept beside the others' records
    python benchmarks/context_parallel.py --quick            # short lengths
"""

from __future__ import annotations

from common import THREADS, parser, print_recorded  # first: it pins the thread pools before torch is imported

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from memory import kept_for_backward, training_memory
from record import record, spread
from tables import TABLES

from lmforge.checkpoint import load_checkpoint
from lmforge.config import ModelConfig
from lmforge.model.mixers import build_mixer
from lmforge.model.transformer import recomputed
from lmforge.optim import build_optimizer
from lmforge.optim.hybrid import local
from lmforge.train.distributed import World, sequence_shard
from lmforge.train.metrics import read_metrics
from lmforge.train.sharding import shard_model

AREA = "context-parallel"
ATTENTION = dict(vocab_size=8, d_model=512, n_heads=16, n_kv_heads=4, head_dim=32, n_layers=1)
LONG_LAYER = dict(vocab_size=8, d_model=512, n_heads=8, head_dim=64, n_layers=1, linear_variant="authors")
MODES = {"one process": (1, None), "Ulysses x2": (2, "ulysses"), "UPipe x2": (2, "upipe"),
         "Ulysses x4": (4, "ulysses"), "UPipe x4": (4, "upipe")}
TITLES = {
    "memory": "attention layer (16 heads of 32, 4 KV heads): MiB each rank keeps for the backward, by sequence length",
    "budget": "the longest sequence whose per-rank kept bytes fit {budget_mib} MiB (bytes per token x T)",
    "time": "attention layer forward+backward at T = {time_length}: seconds per step (slowest rank, median of "
            "{repeats}), ranks sharing {threads} cores",
    "recompute": "one layer at T = {recompute_length} (d 512, 8 heads of 64): bytes kept for the backward and "
                 "forward+backward seconds (median of {repeats}), {threads} threads",
    "data_parallel": "lmforge train small, {ddp_steps} steps: tokens/s, and the parameters, gradients and "
                     "optimizer state each rank holds, in one process and over 2 data-parallel ranks",
}


def attention_layer(max_len: int):
    torch.manual_seed(0)
    return build_mixer("softmax", ModelConfig(**ATTENTION, max_seq_len=max_len), 0)


def rank_work(rank: int, ranks: int, cp_attention: str | None, job: dict, init_file: str, out_dir: str) -> None:
    """One rank's share: per-rank kept bytes at each length, and per-step times at one; written to out_dir."""
    torch.set_num_threads(max(1, THREADS // ranks))
    distributed = ranks > 1
    if distributed:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=ranks)
    shard = sequence_shard(World(rank, ranks), ranks, ranks if cp_attention == "upipe" else 0) if distributed else None
    result = {"kept": {}, "times": []}

    def forward(layer, t: int):
        local = t // ranks
        x = torch.randn(1, local, ATTENTION["d_model"], requires_grad=True, generator=torch.Generator().manual_seed(rank))
        positions = torch.arange(rank * local, (rank + 1) * local)[None]
        layer.sequence_shard = shard
        return x, lambda: layer(x, positions, None)

    for t in job["lengths"]:
        layer = attention_layer(t)
        x, run = forward(layer, t)
        params = {p.untyped_storage().data_ptr() for p in layer.parameters()}
        result["kept"][t] = kept_for_backward(run, params, kept=(x,))[1]  # no rank runs this backward
    if job.get("time_length"):
        layer = attention_layer(job["time_length"])
        x, run = forward(layer, job["time_length"])
        for i in range(job["repeats"] + 1):
            if distributed:
                dist.barrier()
            start = time.perf_counter()
            run().sum().backward()
            if i:  # the first is a warm-up
                result["times"].append(time.perf_counter() - start)
    Path(out_dir, f"{rank}.json").write_text(json.dumps(result))
    if distributed:
        dist.destroy_process_group()


def across_ranks(ranks: int, cp_attention: str | None, job: dict) -> list[dict]:
    """Run `rank_work` on `ranks` processes (in this one for a single rank); each rank's result."""
    with tempfile.TemporaryDirectory() as tmp:
        if ranks == 1:
            rank_work(0, 1, None, job, "", tmp)
        else:
            mp.spawn(rank_work, (ranks, cp_attention, job, str(Path(tmp) / "rendezvous"), tmp), nprocs=ranks)
        return [json.loads(Path(tmp, f"{r}.json").read_text()) for r in range(ranks)]


def memory(args) -> tuple[dict, dict, dict]:
    lengths = [1024, 2048] if args.quick else [2048, 4096, 8192, 16384, 32768]
    raw, rows = {}, []
    for name, (ranks, cp_attention) in MODES.items():
        results = across_ranks(ranks, cp_attention, {"lengths": lengths})
        raw[name] = [r["kept"] for r in results]
        print(f"  memory {name}: " + ", ".join(f"{t} {max(r['kept'][str(t)] for r in results) / 2**20:.0f} MiB"
                                               for t in lengths), flush=True)
    for t in lengths:
        rows.append({"T": t, **{name: max(kept[str(t)] for kept in raw[name]) / 2**20 for name in MODES}})
    budget = args.budget_mib
    fits = []
    for name in MODES:  # what a rank keeps grows linearly in T (checked), so the budget's length is budget / per token
        per_token = [max(k[str(t)] for k in raw[name]) / t for t in lengths]
        fits.append({"mode": name, "bytes_per_token": per_token[-1], "linear": max(per_token) <= 1.01 * min(per_token),
                     "longest_T": int(budget * 2**20 / per_token[-1]) if max(per_token) <= 1.01 * min(per_token) else None})
    return ({"lengths": lengths, "budget_mib": budget, "layer": ATTENTION}, raw,
                      {"memory": rows, "budget": fits})


def step_times(args) -> tuple[dict, dict, dict]:
    length = 2048 if args.quick else args.time_length
    raw, rows = {}, []
    for name, (ranks, cp_attention) in MODES.items():
        results = across_ranks(ranks, cp_attention, {"lengths": [], "time_length": length, "repeats": args.repeats})
        slowest = [max(r["times"][i] for r in results) for i in range(args.repeats)]
        raw[name] = [r["times"] for r in results]
        rows.append({"mode": name, "seconds": spread(slowest)})
        print(f"  time {name}: {rows[-1]['seconds']['median']:.2f} s", flush=True)
    for row in rows:
        if row["mode"].startswith("UPipe"):
            ulysses = next(r for r in rows if r["mode"] == row["mode"].replace("UPipe", "Ulysses"))
            row["within_goal"] = row["seconds"]["median"] <= 1.15 * ulysses["seconds"]["median"]
    return ({"time_length": length, "repeats": args.repeats, "layer": ATTENTION}, raw, {"time": rows})


def recompute(args) -> tuple[dict, dict, dict]:
    length = 2048 if args.quick else 16384
    raw, rows = {}, []
    for mixer, recomputing in (("softmax", False), ("mamba2s", False), ("mamba2s", True), ("softmax", True)):
        torch.manual_seed(0)
        layer = build_mixer(mixer, ModelConfig(**LONG_LAYER, max_seq_len=length), 0)
        if hasattr(layer, "reset_mixer_parameters"):
            layer.reset_mixer_parameters()
        x = torch.randn(1, length, LONG_LAYER["d_model"], requires_grad=True)
        positions = torch.arange(length)[None]
        run = (lambda: recomputed(layer, x, positions)) if recomputing else (lambda: layer(x, positions, None))
        kept = training_memory(layer, lambda: run().sum(), kept=(x,))["saved_bytes"]
        times = []
        for i in range(args.repeats + 1):
            start = time.perf_counter()
            run().sum().backward()
            if i:
                times.append(time.perf_counter() - start)
        name = f"{mixer}{' recomputed' if recomputing else ''}"
        raw[name] = {"kept_bytes": kept, "times": times}
        rows.append({"layer": name, "kept_mib": kept / 2**20, "seconds": spread(times)})
        print(f"  recompute {name}: {kept / 2**20:.0f} MiB, {rows[-1]['seconds']['median']:.2f} s", flush=True)
    return ({"recompute_length": length, "repeats": args.repeats, "layer": LONG_LAYER}, raw,
                         {"recompute": rows})


DATA_PARALLEL = {"one process": (1, False), "DDP x2": (2, False), "FSDP x2": (2, True)}


def train_run(ranks: int, fsdp: bool, steps: int, out: Path) -> list[float]:
    """`lmforge train small` for `steps` steps on `ranks` ranks; its logged tokens/s after the first window."""
    base = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"] if ranks > 1 \
        else [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, THREADS // ranks))}
    cmd = [*base, "-m", "lmforge", "train", "small", f"train.out={out}", f"train.steps={steps}",
           "train.eval_every=0", "train.log_every=10", f"parallel.fsdp={str(fsdp).lower()}", "--no-progress",
           "--overwrite"]
    if subprocess.run(cmd, env=env).returncode:
        sys.exit(f"failed: {' '.join(cmd)}")
    return [r["tokens_per_second"] for r in read_metrics(out / "metrics.jsonl") if "tokens_per_second" in r][1:]


def state_bytes(rank: int, ranks: int, fsdp: bool, run: str, init_file: str, out_dir: str) -> None:
    """Bytes of parameters, gradients and optimizer state this rank holds after one training step of the model
    in `run` (replicated under DDP, its rows under FSDP); DDP's gradient buckets are not counted."""
    torch.set_num_threads(max(1, THREADS // ranks))
    if ranks > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=ranks)
    loaded = load_checkpoint(run)
    model, tc = loaded.model, loaded.config.train
    if fsdp:
        shard_model(model, torch.device("cpu"))
    optimizer = build_optimizer(model, tc)
    forward = torch.nn.parallel.DistributedDataParallel(model) if ranks > 1 and not fsdp else model
    tokens = torch.randint(model.cfg.vocab_size, (tc.batch_size // ranks, tc.seq_len + 1))
    forward(tokens[:, :-1], targets=tokens[:, 1:]).backward()
    optimizer.step()
    held = [local(p) for p in model.parameters()] + [local(p.grad) for p in model.parameters()]
    held += [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
    Path(out_dir, f"{rank}.json").write_text(json.dumps(sum(t.numel() * t.element_size() for t in held)))
    if ranks > 1:
        dist.destroy_process_group()


def data_parallel(args) -> tuple[dict, dict, dict]:
    steps = 20 if args.quick else args.ddp_steps
    raw, rows = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (ranks, fsdp) in DATA_PARALLEL.items():
            out = Path(tmp) / name.replace(" ", "-")
            rates = train_run(ranks, fsdp, steps, out)
            with tempfile.TemporaryDirectory() as results:
                job = (ranks, fsdp, str(out), str(Path(results) / "rendezvous"), results)
                if ranks == 1:
                    state_bytes(0, *job)
                else:
                    mp.spawn(state_bytes, job, nprocs=ranks)
                held = [json.loads(Path(results, f"{r}.json").read_text()) for r in range(ranks)]
            raw[name] = {"tokens_per_second": rates, "state_bytes": held}
            rows.append({"mode": name, "tokens_per_s": spread(rates), "per_rank": spread([r / ranks for r in rates]),
                         "state_mib": max(held) / 2**20})
            print(f"  {name}: {rows[-1]['tokens_per_s']['median']:,.0f} tokens/s, {rows[-1]['state_mib']:.1f} MiB "
                  "per rank", flush=True)
    return {"ddp_steps": steps}, raw, {"data_parallel": rows}


SECTIONS = {"memory": memory, "time": step_times, "recompute": recompute, "data_parallel": data_parallel}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    p.add_argument("--budget-mib", type=float, default=4096, help="per-rank memory budget for the longest-length table")
    p.add_argument("--time-length", type=int, default=8192, help="sequence length of the time section")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (after a warm-up)")
    p.add_argument("--ddp-steps", type=int, default=60, help="training steps of the ddp section")
    args = p.parse_args()
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        sys.exit(f"unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    for section in wanted:
        settings, raw, tables = SECTIONS[section](args)
        path = record(AREA, {section: {**settings, "threads": THREADS}}, {section: raw}, tables, args.out, args.quick,
                      keep_others=True)
        print_recorded(tables, TABLES[AREA], TITLES, {**settings, "repeats": args.repeats}, path)


if __name__ == "__main__":
    main()
