"""Terminal tasks: the generator's throughput and sound verifiers, and SmolLM2-135M-Instruct as a terminal agent
before and after fine-tuning on oracle trajectories.

Sections (`--sections`, each recorded in benchmarks/results/terminal.json as it ends, keeping the others):
  generator  per family: tasks generated per second, and the share of tasks whose verifier is sound (the
             reference solution scores 1 and the broken one below 1, both run in the sandbox), with the seconds
             one check takes (median and range over the tasks)
  sft        oracle trajectories on train-split tasks of every family but the held-out domains' (--holdout),
             curated, fine-tune SmolLM2-135M-Instruct on them (`lmforge train`, data.format=chat), then run the base
             and the tuned model as agents (lmforge serve + the Terminus loop, greedy) on held-out instances: the
             test split of the trained families, and the test split of the held-out families (never trained
             on). The tasks' agent time limit counts the commands' time, not the model's (on 2 cores one
             1,152-token reply takes minutes). Pass rate, mean verifier score with its standard error over tasks, the paired difference
             tuned - base with its standard error ("clear" where it exceeds twice that), malformed turns, and
             the seconds each task spent in the sandbox.

    python benchmarks/terminal.py --sections generator      # about 2 minutes
    python benchmarks/terminal.py --sections sft            # about 2 hours on 2 cores (`lmforge pull smollm2-135m` first)
"""

from __future__ import annotations

from common import THREADS, parser, run_sections  # first: it pins the thread pools before torch is imported

import json
import math
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from record import spread

from lmforge.config import load_run_config
from lmforge.data.terminal.agent import OpenAITeacher, run_episode
from lmforge.data.terminal.families import FAMILIES
from lmforge.data.terminal.generate import generate_tasks
from lmforge.data.terminal.synth import SynthSettings, synthesize
from lmforge.data.terminal.verify import check_tasks
from lmforge.train.trainer import train

AREA = "terminal"
SMOLLM2 = "smollm2-135m"
TITLES = {
    "generator": "task generator: throughput and sound verifiers ({generator_tasks} tasks per family, {threads} threads)",
    "sft": "SmolLM2-135M-Instruct as a terminal agent, before and after SFT on {trajectories} oracle trajectories "
           "({test_per_family} test tasks per family, greedy, at most {max_turns} turns)",
    "sft_domains": "the same, mean verifier score per domain",
}


def generator_section(args) -> tuple[dict, dict, dict]:
    count = 4 if args.quick else args.generator_tasks
    rows, raw = [], {}
    for name, family in sorted(FAMILIES.items()):
        start = time.perf_counter()
        tasks = generate_tasks(count, seed=0, split="train", families=[name])
        generation = time.perf_counter() - start
        checks = check_tasks(tasks, workers=THREADS)
        raw[name] = [{"task": t.id, "reference": c.reference_score, "broken": c.broken_score, "seconds": c.seconds}
                     for t, c in zip(tasks, checks)]
        rows.append({"family": name, "domain": family.domain, "skills": ", ".join(family.skills), "tasks": count,
                     "tasks_per_second": count / generation, "sound": sum(c.sound for c in checks) / count,
                     "check_seconds": spread([c.seconds for c in checks])})
        print(f"  {name}: {rows[-1]['sound']:.0%} sound, {rows[-1]['tasks_per_second']:,.0f} tasks/s", flush=True)
    total = sum(len(v) for v in raw.values())
    rows.append({"family": "all", "domain": "-", "skills": "-", "tasks": total,
                 "tasks_per_second": None, "sound": sum(r["sound"] * r["tasks"] for r in rows) / total,
                 "check_seconds": spread([x["seconds"] for v in raw.values() for x in v])})
    return {"generator": rows}, {"generator": raw}, {"generator_tasks": count}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`lmforge serve MODEL` in a subprocess on a free loopback port, for the duration of a `with` block."""

    def __init__(self, model: str):
        self.model, self.port = model, free_port()

    def __enter__(self) -> str:
        self.process = subprocess.Popen([sys.executable, "-m", "lmforge.cli", "serve", self.model, "--port", str(self.port),
                                         "--served-model-name", "agent", "--max-num-seqs", "8"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{self.port}/v1"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"lmforge serve {self.model} exited with status {self.process.returncode}")
            try:
                urllib.request.urlopen(f"{url}/models", timeout=2).close()
                return url
            except OSError:
                time.sleep(1)
        sys.exit(f"lmforge serve {self.model} did not answer within 5 minutes")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def run_agent(model: str, tasks: list, args) -> list[dict]:
    """Every task once with `model` served as the teacher, several episodes at a time (the engine batches them)."""
    with Server(model) as url:
        teacher = OpenAITeacher(url, "agent", temperature=0.0, max_tokens=args.max_tokens, timeout=3600)
        with ThreadPoolExecutor(args.concurrency) as pool:
            episodes = list(pool.map(lambda t: run_episode(t, teacher, max_turns=args.max_turns,
                                                           count_model_time=False), tasks))
    failed = [e for e in episodes if e.ended.startswith("teacher_error")]
    if failed:  # a broken run measures the server, not the model: record nothing
        sys.exit(f"{len(failed)} episodes of {model} could not reach the model ({failed[0].ended}); nothing recorded")
    return [{"task": e.task.id, "family": e.task.family, "domain": e.task.domain, "score": e.score, "ended": e.ended,
             "turns": e.turns, "malformed": e.malformed, "sandbox_seconds": e.sandbox_seconds, "seconds": e.seconds}
            for e in episodes]


def mean_se(values: list[float]) -> dict:
    """Mean and its standard error over tasks."""
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "se": se, "n": len(values)}


def sft_section(args) -> tuple[dict, dict, dict]:
    work = Path(args.work)
    holdout = [name for name, f in FAMILIES.items() if f.domain in args.holdout.split(",")]
    seen = sorted(set(FAMILIES) - set(holdout))
    if not holdout or not seen:
        sys.exit(f"--holdout {args.holdout} must name some but not all domains' families")
    per_family = 2 if args.quick else args.train_per_family
    synth = SynthSettings(tasks=per_family * len(seen), families=seen, teacher="oracle", max_turns=10)
    report = synthesize(work / "oracle", synth, workers=THREADS, progress=False)
    print(f"  oracle: {report['overall']}, kept {report['kept']}", flush=True)
    tuned = work / "sft"
    if not (tuned / "checkpoint" / "trainer.json").is_file():
        steps = 4 if args.quick else args.steps
        cfg = load_run_config("small", [
            "data.format=chat", f"data.corpus={work / 'oracle' / 'conversations.jsonl'}", f"train.init_from={SMOLLM2}",
            f"train.out={tuned}", f"train.steps={steps}", f"train.seq_len={args.seq_len}", "train.batch_size=4",
            f"train.lr={args.lr}", f"train.matrix_lr={args.lr}", "train.optimizer=adamw", "train.weight_decay=0.0",
            f"train.warmup_steps={max(steps // 10, 1)}", "train.eval_every=0", "train.log_every=5"])
        result = train(cfg, progress=True, overwrite=True)
        print(f"  SFT: {result.step} steps, {result.train_seconds:.0f} s, held-out loss {result.final_eval['loss']:.3f}",
              flush=True)
    sft_state = json.loads((tuned / "checkpoint" / "trainer.json").read_text())
    n_test = 1 if args.quick else args.test_per_family
    groups = {"held-out instances": seen, "held-out families": holdout}
    tasks = {group: generate_tasks(n_test * len(names), seed=0, split="test", families=names)
             for group, names in groups.items()}
    everything = [t for group in groups for t in tasks[group]]
    results = {model: run_agent(path, everything, args) for model, path in (("base", SMOLLM2), ("tuned", str(tuned)))}
    rows, domain_rows = [], []
    for group in groups:
        ids = {t.id for t in tasks[group]}
        scores = {m: [r for r in results[m] if r["task"] in ids] for m in results}
        diff = [t["score"] - b["score"] for b, t in zip(scores["base"], scores["tuned"])]
        for model in results:
            runs = scores[model]
            rows.append({"group": group, "model": model, "tasks": len(runs),
                         "pass_rate": sum(r["score"] == 1.0 for r in runs) / len(runs),
                         "score": mean_se([r["score"] for r in runs]),
                         "difference": mean_se(diff) if model == "tuned" else None,
                         "clear": (abs(statistics.fmean(diff)) > 2 * mean_se(diff)["se"]) if model == "tuned" else None,
                         "malformed": sum(r["malformed"] for r in runs) / max(1, sum(r["turns"] for r in runs)),
                         "sandbox_seconds": spread([r["sandbox_seconds"] for r in runs])})
    for domain in sorted({t.domain for t in everything}):
        row = {"domain": domain, "held_out": domain in args.holdout.split(",")}
        for model in results:
            row[model] = statistics.fmean(r["score"] for r in results[model] if r["domain"] == domain)
        domain_rows.append(row)
    settings = {"holdout_domains": args.holdout, "train_per_family": per_family, "trajectories": report["kept"],
                "test_per_family": n_test, "max_turns": args.max_turns, "max_tokens": args.max_tokens,
                "sft_steps": sft_state["step"], "sft_seconds": sft_state["train_seconds"], "seq_len": args.seq_len,
                "lr": args.lr, "oracle_report": report}
    return {"sft": rows, "sft_domains": domain_rows}, {"sft": results}, settings


SECTIONS = {"generator": generator_section, "sft": sft_section}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    p.add_argument("--work", default="runs/terminal-bench", help="trajectories and the fine-tuned model")
    p.add_argument("--generator-tasks", type=int, default=20, help="tasks per family in the generator section")
    p.add_argument("--holdout", default="security,scientific_computing", help="domains whose families are never trained on")
    p.add_argument("--train-per-family", type=int, default=24)
    p.add_argument("--test-per-family", type=int, default=2)
    p.add_argument("--steps", type=int, default=40, help="SFT steps (of 4 conversations: about one epoch)")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--max-turns", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=1152,
                   help="per model turn; the oracle's longest turn (a solution script) is 1,081 tokens")
    p.add_argument("--concurrency", type=int, default=8, help="episodes at a time (the server batches up to 8)")
    run_sections(SECTIONS, p.parse_args(), AREA, TITLES)


if __name__ == "__main__":
    main()
