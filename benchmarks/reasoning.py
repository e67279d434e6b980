"""Reasoning effort: what the Deep-Thinking Ratio costs inside the engine, how it tracks correctness beside
length, log-probability and self-certainty, and Think@n against self-consistency and the other early-rejection
rules at the same n (Chen et al., "Think Deep, Not Just Long", arXiv 2602.13517).

Sections (`--sections`, each recorded into benchmarks/results/reasoning.json on its own, keeping the others):
  cost    SmolLM2-135M-Instruct, greedy, 128 tokens after a 128-token prompt at batch 1 and 8: decode tokens/s
          without and with `return_dtr` (rounds interleaved, median of 5 with the range), and the extra time per
          generated token
  effort  the reasoning model (`configs/reasoning.toml`, trained here first when --reasoning-model does not
          exist) on arithmetic, tracing and equations in the task format
  words   SmolLM2-135M-Instruct on the arithmetic stories through its chat template (`lmforge pull smollm2-135m`),
          after worked examples from the train split as earlier turns; how many (--words-shots) and the stories'
          number of steps (--words-difficulties) are chosen on the train split: the greedy accuracy of each pair,
          and the one whose accuracy lies in (else nearest to) the 30-80% the measurement needs, the most steps
          and then the fewest examples first, so the test split is measured at a setting it did not choose
For each model and task, effort and words measure: greedy accuracy on the test split; then max(ns) samples per
problem and sampling seed, generated once with every token's signals, from which come
  - Pearson's r with correctness of each sample's DTR, length, mean log-probability and self-certainty, binned as
    the paper does (each problem's samples ranked by the signal into equal bins, accuracy and signal averaged
    per bin over problems, r over the bins) and over the samples themselves;
  - for n in ns, every rule replayed on each problem's first n samples (`lmforge.eval.think.replay`: what the
    engine's rule does to the same samples, rejected prefixes counted): vote accuracy and tokens per problem,
    mean +- std over the seeds, and Think@n (dtr) against Cons@n (all);
  - the check: the engine's own Think@n for every rule at the smallest n on the first --check problems, which
    must give the replay's votes and tokens.

    python benchmarks/reasoning.py --sections cost      # about 5 minutes on 2 cores
    python benchmarks/reasoning.py --sections effort    # trains the reasoning model first when missing
    python benchmarks/reasoning.py --sections words --work runs/reasoning-work  # resumes at the next seed
    python benchmarks/reasoning.py --quick              # every section, small
"""

from __future__ import annotations

from common import THREADS, parser, print_recorded  # first: it pins the thread pools before torch is imported

import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from record import over_seeds, record, separated, spread
from tables import TABLES

from lmforge.data.readers import read_corpus
from lmforge.eval.reasoning import Item, few_shot, load_items, pearson, prompt_ids
from lmforge.eval.dtr import SIGNAL_NAMES, mean_signals
from lmforge.eval.think import Sample, Vote, replay, tally, think_at_n
from lmforge.fileio import write_json
from lmforge.interop.load import load_model
from lmforge.serve.engine import EngineConfig, LLMEngine, engine_dtype
from lmforge.serve.params import SamplingParams
from lmforge.serve.think import RULES, SCORED

AREA = "reasoning"
SECTIONS = ("cost", "effort", "words")
SIGNALS = {"DTR": "dtr", "length": "tokens", "mean log-probability": "logprob", "self-certainty": "certainty"}
SMOLLM2 = "smollm2-135m"
WORDS_TASK = "arithmetic-words"
MEASURABLE = (0.3, 0.8)  # greedy accuracy that leaves sampling room to be right and wrong
EFFORT_TITLES = {
    "accuracy": "held-out greedy accuracy ({problems} test problems per task; SmolLM2 {words_problems})",
    "correlation": "Pearson r with correctness ({samples} samples per problem and seed, seeds {seeds}, temperature "
                   "{temperature})",
    "think": "vote accuracy and tokens per problem by rule and prefix (seeds {seeds}, keep {keep})",
    "think_vs_cons": "Think@n (dtr) against Cons@n (all) at the same n (seeds {seeds})",
    "replay_check": "the engine's own Think@n against the replay (n = {check_n}, prefix {check_prefix}, seed 0)",
}
TITLES = {
    "cost": "DTR inside the engine: SmolLM2-135M decode tokens/s, greedy, {new} tokens after a {prompt}-token prompt, "
            "{threads} threads",
    **EFFORT_TITLES, **{f"{name}_words": title for name, title in EFFORT_TITLES.items()},
    "difficulty_words": "SmolLM2's greedy accuracy on {words_problems} train-split stories by worked examples and "
                        "steps",
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


# effort: correlation and Think@n, from one generation per model, task and seed


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


def choose_setting(args, loaded) -> tuple[int, int, list[dict]]:
    """The worked examples and steps of SmolLM2's stories, chosen on the train split: the pair whose greedy
    accuracy lies in MEASURABLE (else the nearest to it), the most steps and then the fewest examples first;
    with each candidate's row."""
    rows = []
    for shots in args.words_shots:
        for difficulty in args.words_difficulties:
            items = load_items(WORDS_TASK, None, "train", args.words_problems, 0, difficulty)
            examples = few_shot(WORDS_TASK, shots, difficulty)
            votes = samples_of(loaded, items, True, SamplingParams(max_tokens=args.max_new, temperature=0), examples)
            accuracy = sum(v.answer == i.answer for v, i in zip(votes, items)) / len(items)
            rows.append({"shots": shots, "difficulty": difficulty, "accuracy": accuracy})
            print(f"  {SMOLLM2} {WORDS_TASK} {shots} examples, {difficulty} steps: train greedy accuracy "
                  f"{accuracy:.3f}", flush=True)
    low, high = MEASURABLE
    chosen = min(rows, key=lambda r: (max(low - r["accuracy"], r["accuracy"] - high, 0), -r["difficulty"], r["shots"]))
    for row in rows:
        row["chosen"] = "yes" if row is chosen else "no"
    return chosen["shots"], chosen["difficulty"], rows


def suites(args, section: str) -> tuple[list[tuple[str, object, str, bool, int, int, list]], dict]:
    """(model name, loaded model, task, chat, problems, difficulty, worked examples) of every pair the section
    measures, and the tables of how its settings were chosen."""
    if section == "words":
        loaded = load_model(SMOLLM2)
        n_shots, difficulty, choice = choose_setting(args, loaded)
        shots = few_shot(WORDS_TASK, n_shots, difficulty)
        return [(SMOLLM2, loaded, WORDS_TASK, True, args.words_problems, difficulty, shots)], {"difficulty": choice}
    ours = reasoning_model(args)
    return [("reasoning", ours, task, False, args.problems, args.difficulty, []) for task in args.tasks.split(",")], {}


def samples_of(loaded, items: list[Item], chat: bool, params: SamplingParams, shots: list = ()):
    engine = engine_for(loaded.model, loaded.tokenizer, 128)
    prompts = [prompt_ids(loaded.tokenizer, item, chat, shots) for item in items]
    return think_at_n(engine, prompts, params)


def seed_samples(work: Path | None, settings: dict, loaded, items: list[Item], chat: bool, shots: list,
                 params: SamplingParams) -> list[Vote]:
    """One seed's samples of every problem: read from `work` when a run with the same settings left them there
    (so a long section resumes where an interrupted one stopped), else generated and kept there."""
    path = work / ("samples-" + "-".join(str(v).replace("/", "_") for v in settings.values()) + ".json") if work else None
    if path and path.is_file() and (cached := json.loads(path.read_text()))["settings"] == settings:
        return [tally([Sample(**{**d, "token_signals": [tuple(t) for t in d["token_signals"] or []]}) for d in problem])
                for problem in cached["samples"]]
    votes = samples_of(loaded, items, chat, params, shots)
    if path:
        write_json(path, {"settings": settings, "samples": [[{k: v for k, v in asdict(s).items() if k != "answer"}
                                                              for s in vote.samples] for vote in votes]})
    return votes


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


def sample_record(sample: Sample, correct: bool, prefixes: list[int]) -> list:
    """What the record keeps of one sample: tokens, correct, DTR, mean log-probability and self-certainty over all
    its tokens, then over its first p tokens for each prefix p (what the prefix rules score)."""
    means = [mean_signals(sample.token_signals), *(mean_signals(sample.token_signals[:p]) for p in prefixes)]
    return [sample.tokens, int(correct), *(round(m[k], 4) for m in means for k in SIGNAL_NAMES)]


def correlation_row(per_problem: list[list[dict]], bins: int) -> dict:
    flat = [s for problem in per_problem for s in problem]
    row = {"sample_accuracy": sum(s["correct"] for s in flat) / len(flat)}
    for key in SIGNALS.values():
        row[f"{key} binned"] = binned_r([[(s[key], s["correct"]) for s in p] for p in per_problem], bins)
        row[f"{key} samples"] = pearson([s[key] for s in flat], [s["correct"] for s in flat])
    return row


def effort_section(args, section: str) -> tuple[dict, dict, dict]:
    """Per model and task: greedy accuracy; max(ns) samples per problem and seed with every token's signals, once;
    the correlations over them; every rule replayed on the first n samples for each n; and the engine's own
    Think@n on the first problems, which must agree with the replay."""
    tables = {name: [] for name in ("accuracy", "correlation", "think", "think_vs_cons", "replay_check")}
    raw, top = {}, max(args.ns)
    measured, choices = suites(args, section)
    tables.update(choices)
    for name, loaded, task, chat, problems, difficulty, shots in measured:
        key = {"model": name, "task": task}
        items = load_items(task, None, "test", problems, 0, difficulty)
        greedy = samples_of(loaded, items, chat, SamplingParams(max_tokens=args.max_new, temperature=0), shots)
        greedy_correct = [v.answer == i.answer for v, i in zip(greedy, items)]
        tables["accuracy"].append({**key, "accuracy": sum(greedy_correct) / len(items)})
        runs = []
        for seed in range(args.seeds):
            params = SamplingParams(n=top, max_tokens=args.max_new, temperature=args.temperature, seed=seed,
                                    return_dtr=True)
            runs.append(seed_samples(args.work, {**key, "problems": problems, "difficulty": difficulty,
                                                 "shots": len(shots), "n": top, "max_new": args.max_new,
                                                 "temperature": args.temperature, "seed": seed},
                                     loaded, items, chat, shots, params))
            print(f"  {name} {task}: seed {seed} sampled", flush=True)
        per_problem = [[{"correct": float(s.answer == item.answer), "tokens": float(s.tokens),
                         **mean_signals(s.token_signals)} for votes in runs for s in votes[i].samples]
                       for i, item in enumerate(items)]
        tables["correlation"].append({**key, **correlation_row(per_problem, args.bins)})
        flat = [s for problem in per_problem for s in problem]
        tables["accuracy"][-1]["sample_tokens"] = sum(s["tokens"] for s in flat) / len(flat)
        variants = [(rule, prefix) for prefix in args.prefixes for rule in SCORED] + [("length", None), ("all", None)]
        for n in args.ns:
            per_rule = {v: {"accuracy": [], "tokens": []} for v in variants}
            for votes in runs:
                for rule, prefix in variants:
                    replayed = [replay(v.samples[:n], rule, args.keep, prefix or 0) for v in votes]
                    stats = per_rule[rule, prefix]
                    stats["accuracy"].append(sum(v.answer == i.answer for v, i in zip(replayed, items)) / len(items))
                    stats["tokens"].append(sum(v.tokens for v in replayed) / len(items))
            for (rule, prefix), stats in per_rule.items():
                tables["think"].append({**key, "n": n, "rule": rule, "prefix": prefix,
                                        "accuracy": over_seeds(stats["accuracy"]), "tokens": over_seeds(stats["tokens"])})
            cons = per_rule["all", None]
            for prefix in args.prefixes:
                think = per_rule["dtr", prefix]
                a, b = over_seeds(think["accuracy"]), over_seeds(cons["accuracy"])
                tables["think_vs_cons"].append({
                    **key, "n": n, "prefix": prefix, "think_accuracy": a, "cons_accuracy": b,
                    "accuracy_gap_separated": separated(a, b),
                    "token_share": over_seeds([t / c for t, c in zip(think["tokens"], cons["tokens"])])})
                print(f"  {name} {task} n={n} prefix {prefix}: Think@n {a['mean']:.3f} vs Cons@n {b['mean']:.3f}",
                      flush=True)
        n, prefix, checked = min(args.ns), min(args.prefixes), items[:args.check]
        for rule in RULES:
            params = SamplingParams(n=n, max_tokens=args.max_new, temperature=args.temperature, seed=0, think=rule,
                                    think_prefix=prefix, think_keep=args.keep)
            in_engine = samples_of(loaded, checked, chat, params, shots)
            replayed = [replay(v.samples[:n], rule, args.keep, prefix) for v in runs[0][:len(checked)]]
            tables["replay_check"].append({**key, "n": n, "rule": rule, "problems": len(checked),
                                           "same_vote": sum(e.answer == r.answer for e, r in zip(in_engine, replayed)),
                                           "same_tokens": sum(e.tokens == r.tokens for e, r in zip(in_engine, replayed))})
        raw[f"{name} {task}"] = {
            "difficulty": difficulty, "shots": [shot.prompt for shot in shots], "greedy_correct": greedy_correct,
            "samples": [[[sample_record(s, s.answer == item.answer, args.prefixes) for s in votes[i].samples]
                         for i, item in enumerate(items)] for votes in runs]}
    settings = {"problems": args.problems, "words_problems": args.words_problems, "ns": args.ns, "samples": top,
                "check_n": min(args.ns),
                "seeds": list(range(args.seeds)), "prefixes": args.prefixes, "check_prefix": min(args.prefixes),
                "keep": args.keep,
                "temperature": args.temperature, "max_new": args.max_new, "bins": args.bins,
                "difficulty": args.difficulty, "check": args.check, "words_shots": args.words_shots,
                "words_difficulties": args.words_difficulties,
                "sample_fields": ["tokens", "correct", *SIGNAL_NAMES,
                                  *(f"{k} over {p}" for p in args.prefixes for k in SIGNAL_NAMES)]}
    suffix = "" if section == "effort" else f"_{section}"
    return settings, {section: raw}, {f"{name}{suffix}": rows for name, rows in tables.items()}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, from {', '.join(SECTIONS)}")
    p.add_argument("--reasoning-model", default="runs/reasoning", help="the reasoning checkpoint (trained if missing)")
    p.add_argument("--tasks", default="arithmetic,tracing,equations", help="tasks of the reasoning model")
    p.add_argument("--problems", type=int, default=100, help="test problems per task of the reasoning model")
    p.add_argument("--words-problems", type=int, default=100,
                   help="test problems of SmolLM2's section, and train problems of its choice")
    p.add_argument("--difficulty", type=int, default=3, help="steps of the reasoning model's problems")
    p.add_argument("--words-difficulties", default="1,2,3", help="steps of SmolLM2's stories to choose from")
    p.add_argument("--words-shots", default="0,4", help="worked examples before each of SmolLM2's stories, to "
                   "choose from")
    p.add_argument("--ns", default="8,16,32", help="n of Think@n and the other rules (the largest is sampled)")
    p.add_argument("--seeds", type=int, default=3, help="sampling seeds")
    p.add_argument("--check", type=int, default=20, help="problems run through the engine's own Think@n")
    p.add_argument("--prefixes", default="8,16,50", help="Think@n prefix tokens (the paper's 50 is longer than most "
                   "of these tasks' answers)")
    p.add_argument("--keep", type=float, default=0.5, help="Think@n share kept")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--max-new", type=int, default=256)
    p.add_argument("--bins", type=int, default=4, help="bins per problem of the binned correlation")
    p.add_argument("--work", type=Path, default=None, help="keep each seed's samples here and reuse them, so an "
                   "interrupted section resumes at its next seed (default: keep nothing)")
    args = p.parse_args()
    if args.quick:
        args.problems, args.words_problems, args.ns, args.seeds, args.max_new = 6, 3, "2,4", 1, 48
        args.tasks, args.prefixes, args.check = "arithmetic", "4,8", 3
        args.words_difficulties, args.words_shots = "1", "4"
    args.ns = sorted(int(n) for n in str(args.ns).split(","))
    args.words_difficulties = sorted(int(d) for d in str(args.words_difficulties).split(","))
    args.words_shots = sorted(int(k) for k in str(args.words_shots).split(","))
    args.prefixes = sorted(int(p) for p in str(args.prefixes).split(","))
    sections = args.sections.split(",")
    if set(sections) - set(SECTIONS):
        sys.exit(f"unknown section; choose from {', '.join(SECTIONS)}")
    for section in sections:
        settings, raw, tables = cost_section(args) if section == "cost" else effort_section(args, section)
        path = record(AREA, {section: {**settings, "threads": THREADS}}, raw if section != "cost" else {section: raw},
                      tables, args.out, args.quick, keep_others=True)
        print_recorded(tables, TABLES[AREA], TITLES, settings, path)


if __name__ == "__main__":
    main()
