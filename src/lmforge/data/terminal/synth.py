"""`lmforge data synth terminal`: tasks -> agent trajectories in the sandbox -> curated chat conversations.

The tasks (generated from the families, or read from a tasks file or Terminal-Bench directories) are cut
into shards; each shard's episodes run on the data pipeline's executors (local processes or Ray) and
its trajectories are written atomically, so a run started again skips the shards it finished. Then
curation keeps the trajectories worth training on (`curate.Curator`) and the report counts, per domain,
skill and family, how the teacher did.

Output directory: synth.json (the settings), tasks.jsonl, trajectories/shard-*.jsonl, conversations.jsonl
(kept, chat format), dropped.jsonl (trajectory, reason), report.json.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lmforge.data.executors import make_executor
from lmforge.data.terminal import sandbox
from lmforge.data.terminal.agent import OpenAITeacher, OracleTeacher, run_episode
from lmforge.data.terminal.curate import Curator, conversation, task_text
from lmforge.data.terminal.generate import generate_tasks
from lmforge.data.terminal.task import TerminalTask, read_tasks, write_tasks
from lmforge.data.terminal.terminal_bench import import_task
from lmforge.errors import ConfigError
from lmforge.fileio import OutputKind, atomic_path, claim_output, refuse_overlap, write_json

MARKER = "synth.json"
OUTPUT = OutputKind("terminal trajectory set", MARKER, "settings", frozenset({
    MARKER, "tasks.jsonl", "trajectories", "conversations.jsonl", "dropped.jsonl", "report.json", ".*.tmp"}))


@dataclass
class SynthSettings:
    """What shapes a synthesis run's output (a run resumes only with the same settings)."""

    tasks: int = 32
    tasks_from: str = ""  # a tasks.jsonl, or a directory of Terminal-Bench task directories, instead of generating
    seed: int = 0
    split: str = "train"
    families: list[str] = field(default_factory=list)
    teacher: str = "oracle"  # "oracle", or the URL of an OpenAI-compatible endpoint (ending in /v1)
    model: str = ""
    temperature: float = 0.0
    max_tokens: int = 1024
    max_turns: int = 30
    shard_size: int = 8
    held_out: str = ""  # tasks whose text must not appear in kept trajectories (tasks.jsonl or Terminal-Bench dirs)
    keep_failed: bool = True

    def __post_init__(self) -> None:
        if self.teacher != "oracle" and not self.teacher.startswith(("http://", "https://")):
            raise ConfigError(f"--teacher must be 'oracle' or an http(s) URL of an OpenAI-compatible API, not {self.teacher!r}")
        if self.teacher != "oracle" and not self.model:
            raise ConfigError("a teacher endpoint needs --model (the model name it serves)")
        for name, value, low in (("tasks", self.tasks, 1), ("max_turns", self.max_turns, 1), ("shard_size", self.shard_size, 1)):
            if value < low:
                raise ConfigError(f"{name} must be at least {low}, got {value}")


def load_tasks(path: str) -> list[TerminalTask]:
    """Tasks from a tasks.jsonl file, one Terminal-Bench task directory, or a directory of them."""
    root = Path(path).expanduser()
    if root.is_file():
        return read_tasks(root)
    if (root / "task.toml").is_file():
        return [import_task(root)]
    if root.is_dir():
        found = [import_task(d) for d in sorted(root.iterdir()) if (d / "task.toml").is_file()]
        if found:
            return found
    raise ConfigError(f"{path} is neither a tasks .jsonl file nor a (directory of) Terminal-Bench task directories")


def _teacher(settings: SynthSettings, task: TerminalTask):
    if settings.teacher == "oracle":
        return OracleTeacher(task)
    return OpenAITeacher(settings.teacher, settings.model, os.environ.get("OPENAI_API_KEY", ""),
                         settings.temperature, settings.max_tokens)


def _run_shard(job: tuple[dict, list[dict], str]) -> int:
    """Run one shard's episodes and write its trajectories atomically (a worker's whole job)."""
    settings, tasks, path = job
    settings = SynthSettings(**settings)
    records = []
    for data in tasks:
        task = TerminalTask.from_dict(data)
        records.append(run_episode(task, _teacher(settings, task), max_turns=settings.max_turns).to_dict())
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return len(records)


def _rate(records: list[dict]) -> dict:
    return {"trajectories": len(records),
            "mean_score": round(sum(r["score"] for r in records) / len(records), 4),
            "pass_rate": round(sum(r["score"] == 1.0 for r in records) / len(records), 4)}


def summarize(records: list[dict], kept: int, dropped: Counter) -> dict:
    """Pass rates per domain, skill and family; how episodes ended; malformed turns; time in the sandbox."""
    groups: dict[str, dict[str, list]] = {"domain": defaultdict(list), "skill": defaultdict(list), "family": defaultdict(list)}
    for r in records:
        groups["domain"][r["domain"]].append(r)
        groups["family"][r["family"]].append(r)
        for skill in r["skills"]:
            groups["skill"][skill].append(r)
    turns = sum(r["turns"] for r in records)
    return {"overall": _rate(records),
            **{f"by_{name}": {k: _rate(v) for k, v in sorted(g.items())} for name, g in groups.items()},
            "ended": dict(Counter(r["ended"].split(":", 1)[0] for r in records).most_common()),
            "malformed_turns": sum(r["malformed"] for r in records), "turns": turns,
            "seconds_per_task": round(sum(r["seconds"] for r in records) / len(records), 3),
            "sandbox_seconds_per_task": round(sum(r["sandbox_seconds"] for r in records) / len(records), 3),
            "kept": kept, "dropped": dict(dropped.most_common())}


def synthesize(out: str | Path, settings: SynthSettings, *, workers: int = 2, executor: str = "local",
               ray_address: str = "", overwrite: bool = False, progress: bool = True) -> dict:
    """Run the teacher on the tasks in the sandbox, curate the trajectories, and write them with a report."""
    out = Path(out)
    if not sandbox.available():
        raise sandbox.SandboxError(sandbox._probe())
    refuse_overlap(out, [p for p in (settings.tasks_from, settings.held_out) if p])
    marker = out / MARKER
    previous = json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else None
    resuming = previous is not None and previous.get("settings") == asdict(settings)
    if not resuming:
        claim_output(out, OUTPUT, overwrite=overwrite,
                     overwrite_hint="the settings differ from that run's; pass --overwrite")
        if previous is not None:
            for stale in (out / "trajectories").glob("shard-*.jsonl"):
                stale.unlink()
    tasks = load_tasks(settings.tasks_from) if settings.tasks_from else generate_tasks(
        settings.tasks, settings.seed, settings.split, settings.families or None)
    held_out = [task_text(t) for t in load_tasks(settings.held_out)] if settings.held_out else []
    out.mkdir(parents=True, exist_ok=True)
    write_json(marker, {"settings": asdict(settings)})
    write_tasks(tasks, out / "tasks.jsonl")
    (out / "trajectories").mkdir(exist_ok=True)
    shards = [tasks[i:i + settings.shard_size] for i in range(0, len(tasks), settings.shard_size)]
    paths = [out / "trajectories" / f"shard-{k:05d}.jsonl" for k in range(len(shards))]
    jobs = [(asdict(settings), [t.to_dict() for t in shard], str(path))
            for shard, path in zip(shards, paths) if not path.is_file()]
    runner = make_executor(executor, workers, ray_address)
    try:
        runner.map(_run_shard, jobs, desc="episodes (shards)", progress=progress)
    finally:
        runner.close()
    records = [json.loads(line) for path in paths for line in path.read_text(encoding="utf-8").splitlines()]
    curator = Curator(held_out, keep_failed=settings.keep_failed)
    kept, dropped, reasons = [], [], Counter()
    for record in records:
        reason = curator.reject(record)
        if reason is None:
            kept.append(conversation(record))
        else:
            dropped.append({"task": record["task"], "reason": reason, "ended": record["ended"], "score": record["score"]})
            reasons[reason] += 1
    for name, rows in (("conversations.jsonl", kept), ("dropped.jsonl", dropped)):
        with atomic_path(out / name) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    report = summarize(records, len(kept), reasons)
    write_json(out / "report.json", report)
    return report

