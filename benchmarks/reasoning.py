"""Reasoning effort: what the Deep-Thinking Ratio costs inside the engine, how it tracks correctness beside
length, log-probability and self-certainty, and Think@n against self-consistency and the other early-rejection
rules at the same n (Chen et al., "Think Deep, Not Just Long", arXiv 2602.13517).

Sections (`--sections`, each recorded into benchmarks/results/reasoning.json on its own, keeping the others):
  cost         SmolLM2-135M-Instruct, greedy, 128 tokens after a 128-token prompt at batch 1 and 8: decode
               tokens/s without and with `return_dtr` (rounds interleaved, median of 5 with the range), and
               the extra time per generated token
  correlation  per model and task: greedy accuracy on the test split (one sample per problem), then n samples
               per problem with each sample's DTR, length, mean log-probability, self-certainty and
               correctness; Pearson's r of each signal with correctness, binned as the paper does (each
               problem's samples ranked by the signal into equal bins, accuracy and signal averaged per bin
               over problems, r over the bins) and over the samples themselves
  think        per model and task, n = 8, 16, 32 and 3 sampling seeds: every rule's vote accuracy and tokens
               per problem (rejected prefixes included), mean +- std over the seeds, and Think@n (dtr) against
               Cons@n (all): accuracy and the share of Cons@n's tokens it used
Models: the reasoning model (`configs/reasoning.toml`, trained here first when --reasoning-model does not
exist) on arithmetic, tracing and equations in the task format, and SmolLM2-135M-Instruct on the arithmetic
stories through its chat template (needs `lmforge pull smollm2-135m`).

    python benchmarks/reasoning.py --sections cost          # about 5 minutes on 2 cores
    python benchmarks/reasoning.py --sections correlation   # trains the reasoning model first (about 25 minutes)
    python benchmarks/reasoning.py --sections think
    python benchmarks/reasoning.py --quick                   # every section, small
"""

from __future__ import annotations

from common import THREADS, parser, print_recorded  # first: it pins the thread pools before torch is imported

import subprocess
import sys
import time
from pathlib import Path

import torch
from record import over_seeds, record, separated, spread
from tables import TABLES

from lmforge.data.readers import read_corpus
from lmforge.eval.reasoning import Item, load_items, pearson, prompt_ids
from lmforge.eval.think import think_at_n
from lmforge.interop.load import load_model
from lmforge.serve.engine import EngineConfig, LLMEngine, engine_dtype
from lmforge.serve.params import SamplingParams

AREA = "reasoning"
SECTIONS = ("cost", "correlation", "think")
SIGNALS = {"DTR": "dtr", "length": "tokens", "mean log-probability": "logprob", "self-certainty": "certainty"}
RULES = ("dtr", "logprob", "certainty", "length", "all")
SMOLLM2 = "smollm2-135m"
TITLES = {
    "cost": "DTR inside the engine: SmolLM2-135M decode tokens/s, greedy, {new} tokens after a {prompt}-token prompt, "
            "{threads} threads",
    "accuracy": "held-out greedy accuracy ({problems} test problems per task)",
    "correlation": "Pearson r with correctness ({n} samples per problem, {problems} problems, temperature {temperature})",
    "think": "vote accuracy and tokens per problem by rule ({problems} problems, seeds {seeds}, prefix {prefix}, "
             "keep {keep})",
    "think_vs_cons": "Think@n (dtr) against Cons@n (all) at the same n",
}


def engine_for(model, tokenizer, max_num_seqs: int) -> LLMEngine:
    dtype = engine_dtype("auto", model.embed.weight.device)
    return LLMEngine(model, tokenizer, EngineConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=2048, dtype=dtype))


# cost


def decode_rate(engine: LLMEngine, prompts: list[list[int]], n_new: int, dtr: bool) -> float:
    """Generated tokens per second from the first new token to the last (prefill left out), all prompts at once."""
    params = SamplingParams(max_tokens=n_new, temperature=0, ignore_eos=True, return_dtr=dtr)
    for i, p in enumerate(prompts):
        engine.add_request(f"cost-{i}", p, params)
    first = None
    tokens = 0
    while engine.has_unfinished():
        deltas = engine.step()
        new = sum(len(d.token_ids) for d in deltas)
        if new and first is None:
            first, tokens = time.perf_counter(), -new  # the tokens of the first step come from the prefill
        tokens += new
    return tokens / (time.perf_counter() - first)


def cost_section(args) -> tuple[dict, dict, dict]:
    loaded = load_model(SMOLLM2)
    text = "\n\n".join(d.text for d in list(read_corpus("pydoc"))[:40])
    stream_ids = loaded.tokenizer.encode(text)
    n_new, prompt_len, repeats = (16, 64, 2) if args.quick else (128, 128, 5)
    rows, raw = [], {}
    for batch in (1, 8):
        prompts = [stream_ids[i * prompt_len:(i + 1) * prompt_len] for i in range(batch)]
        engine = engine_for(loaded.model, loaded.tokenizer, batch)
        decode_rate(engine, prompts, 8, False), decode_rate(engine, prompts, 8, True)  # warm-up
        runs = {"plain": [], "dtr": []}
        for _ in range(repeats):  # interleaved, so drift in the machine's speed hits both alike
            for variant in runs:
                runs[variant].append(decode_rate(engine, prompts, n_new, variant == "dtr"))
        extra = [p / d - 1 for p, d in zip(runs["plain"], runs["dtr"])]
        raw[f"batch {batch}"] = {**runs, "extra": extra}
        rows.append({"batch": batch, "plain": spread(runs["plain"]), "dtr": spread(runs["dtr"]), "extra": spread(extra)})
        print(f"  batch {batch}: plain {rows[-1]['plain']['median']:.1f}, with DTR {rows[-1]['dtr']['median']:.1f} "
              f"tokens/s", flush=True)
    settings = {"model": SMOLLM2, "new": n_new, "prompt": prompt_len, "repeats": repeats,
                "dtype": str(engine_dtype("auto", torch.device("cpu"))), "n_layers": loaded.model.cfg.n_layers}
    return settings, raw, {"cost": rows}


# correlation and think: the models and their tasks


def reasoning_model(args):
    """The reasoning checkpoint, trained first (with the built-in config) when it does not exist."""
    path = Path(args.reasoning_model)
    if not (path / "checkpoint").exists() and not (path / "config.json").exists():
        steps = ["train.steps=60", "train.eval_every=60", "train.compile=false"] if args.quick else []
        print(f"training the reasoning model into {path} ...", flush=True)
        cmd = [sys.executable, "-m", "lmforge.cli", "train", "reasoning", f"train.out={path}", "--no-progress", *steps]
        if subprocess.run(cmd).returncode:
            sys.exit("training the reasoning model failed")
    return load_model(str(path))


def suites(args) -> list[tuple[str, object, str, bool]]:
    """(model name, loaded model, task, chat) of every measured pair."""
    ours = reasoning_model(args)
    pairs = [("reasoning", ours, task, False) for task in args.tasks.split(",")]
    if not args.quick:
        pairs.append((SMOLLM2, load_model(SMOLLM2), "arithmetic-words", True))
    return pairs


def samples_of(loaded, items: list[Item], chat: bool, params: SamplingParams):
    engine = engine_for(loaded.model, loaded.tokenizer, 64)
    prompts = [prompt_ids(loaded.tokenizer, item, chat) for item in items]
    return think_at_n(engine, prompts, params)


def binned_r(per_problem: list[list[tuple[float, float]]], bins: int) -> float | None:
    """The paper's binned correlation: each problem's (signal, correct) samples ranked by the signal into `bins`
    equal bins; signal and accuracy averaged per bin over the problems; Pearson's r over the bins."""
    sums = [[0.0, 0.0, 0] for _ in range(bins)]
    for samples in per_problem:
        ranked = sorted(samples, key=lambda s: s[0])
        for rank, (signal, correct) in enumerate(ranked):
            b = rank * bins // len(ranked)
            sums[b][0] += signal
            sums[b][1] += correct
            sums[b][2] += 1
    points = [(s / k, c / k) for s, c, k in sums if k]
    return pearson([p[0] for p in points], [p[1] for p in points])


def correlation_section(args) -> tuple[dict, dict, dict]:
    accuracy_rows, corr_rows, raw = [], [], {}
    for name, loaded, task, chat in suites(args):
        items = load_items(task, None, "test", args.problems, 0, args.difficulty)
        greedy = samples_of(loaded, items, chat, SamplingParams(max_tokens=args.max_new, temperature=0))
        correct = [v.answer == i.answer for v, i in zip(greedy, items)]
        accuracy_rows.append({"model": name, "task": task, "accuracy": sum(correct) / len(correct)})
        params = SamplingParams(n=args.n, max_tokens=args.max_new, temperature=args.temperature, seed=0,
                                return_dtr=True)
        votes = samples_of(loaded, items, chat, params)
        samples = [[{"correct": float(s.answer == item.answer), **{k: float(getattr(s, k)) for k in SIGNALS.values()}}
                    for s in vote.samples] for vote, item in zip(votes, items)]
        raw[f"{name} {task}"] = {"greedy_correct": correct, "samples": samples}
        flat = [s for problem in samples for s in problem]
        row = {"model": name, "task": task, "sample_accuracy": sum(s["correct"] for s in flat) / len(flat)}
        for label, key in SIGNALS.items():
            row[f"{key} binned"] = binned_r([[(s[key], s["correct"]) for s in p] for p in samples], args.bins)
            row[f"{key} samples"] = pearson([s[key] for s in flat], [s["correct"] for s in flat])
        corr_rows.append(row)
        print(f"  {name} {task}: greedy accuracy {accuracy_rows[-1]['accuracy']:.3f}, DTR r (binned) "
              f"{row['dtr binned']}", flush=True)
    settings = {"problems": args.problems, "n": args.n, "temperature": args.temperature, "max_new": args.max_new,
                "bins": args.bins, "difficulty": args.difficulty}
    return settings, raw, {"accuracy": accuracy_rows, "correlation": corr_rows}


def think_section(args) -> tuple[dict, dict, dict]:
    rows, claims, raw = [], [], {}
    for name, loaded, task, chat in suites(args):
        items = load_items(task, None, "test", args.problems, 0, args.difficulty)
        for n in args.ns:
            per_rule: dict[str, dict[str, list[float]]] = {}
            for rule in RULES:
                for seed in range(args.seeds):
                    params = SamplingParams(n=n, max_tokens=args.max_new, temperature=args.temperature, seed=seed,
                                            think=rule, think_prefix=args.prefix, think_keep=args.keep)
                    votes = samples_of(loaded, items, chat, params)
                    stats = per_rule.setdefault(rule, {"accuracy": [], "tokens": []})
                    stats["accuracy"].append(sum(v.answer == i.answer for v, i in zip(votes, items)) / len(items))
                    stats["tokens"].append(sum(v.tokens for v in votes) / len(items))
                rows.append({"model": name, "task": task, "n": n, "rule": rule,
                             "accuracy": over_seeds(per_rule[rule]["accuracy"]),
                             "tokens": over_seeds(per_rule[rule]["tokens"])})
                print(f"  {name} {task} n={n} {rule}: accuracy {rows[-1]['accuracy']['mean']:.3f}, "
                      f"tokens {rows[-1]['tokens']['mean']:.0f}", flush=True)
            raw[f"{name} {task} n={n}"] = per_rule
            think, cons = per_rule["dtr"], per_rule["all"]
            a, b = over_seeds(think["accuracy"]), over_seeds(cons["accuracy"])
            claims.append({"model": name, "task": task, "n": n, "think_accuracy": a, "cons_accuracy": b,
                           "token_share": over_seeds([t / c for t, c in zip(think["tokens"], cons["tokens"])]),
                           "accuracy_gap_separated": separated(a, b)})
    settings = {"problems": args.problems, "ns": args.ns, "seeds": list(range(args.seeds)), "prefix": args.prefix,
                "keep": args.keep, "temperature": args.temperature, "max_new": args.max_new}
    return settings, raw, {"think": rows, "think_vs_cons": claims}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, from {', '.join(SECTIONS)}")
    p.add_argument("--reasoning-model", default="runs/reasoning", help="the reasoning checkpoint (trained if missing)")
    p.add_argument("--tasks", default="arithmetic,tracing,equations", help="tasks of the reasoning model")
    p.add_argument("--problems", type=int, default=100, help="test problems per task")
    p.add_argument("--difficulty", type=int, default=3)
    p.add_argument("--n", type=int, default=8, help="samples per problem of the correlation section")
    p.add_argument("--ns", default="8,16,32", help="n of the think section")
    p.add_argument("--seeds", type=int, default=3, help="sampling seeds of the think section")
    p.add_argument("--prefix", type=int, default=50, help="Think@n prefix tokens")
    p.add_argument("--keep", type=float, default=0.5, help="Think@n share kept")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--max-new", type=int, default=256)
    p.add_argument("--bins", type=int, default=4, help="bins per problem of the binned correlation")
    args = p.parse_args()
    if args.quick:
        args.problems, args.n, args.ns, args.seeds, args.max_new, args.tasks = 6, 4, "4", 1, 48, "arithmetic"
        args.prefix = 8
    args.ns = [int(n) for n in str(args.ns).split(",")]
    sections = args.sections.split(",")
    if set(sections) - set(SECTIONS):
        sys.exit(f"unknown section; choose from {', '.join(SECTIONS)}")
    run = {"cost": cost_section, "correlation": correlation_section, "think": think_section}
    for section in sections:
        settings, raw, tables = run[section](args)
        path = record(AREA, {section: {**settings, "threads": THREADS}}, {section: raw}, tables, args.out, args.quick,
                      keep_others=True)
        print_recorded(tables, TABLES[AREA], TITLES, settings, path)


if __name__ == "__main__":
    main()
