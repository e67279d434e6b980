"""One terminal task: what the agent is told, the files it starts from, weighted tests that score what it
leaves behind, a reference solution and a deliberately broken one (so every verifier is itself tested).

The layout follows the terminal-task data of "On Data Engineering for Scaling LLM Terminal Capabilities"
(Pi, Lam et al., 2026, arXiv 2602.21193): a prompt, input files and weighted pytest tests per task. The
agent works in `/app` (the task's files), the tests read `/app` and never import the agent's code into
the test process: code under test runs in a subprocess, so it cannot rewrite the verdict.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lmforge.data.readers import json_records
from lmforge.errors import DataError
from lmforge.fileio import OutputKind, atomic_path

WORKDIR = "/app"  # where the agent's shell starts and the task's files lie, inside the sandbox
TASK_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
TASKS_FILE = OutputKind("terminal tasks file", magic=b'{"id": ')
SAFE_PATH = re.compile(r"^(?!/)(?!.*(?:^|/)\.\.(?:/|$))[A-Za-z0-9._/-]{1,200}$")


@dataclass(frozen=True)
class TerminalTask:
    """A generated (or imported) terminal task.

    `files` maps paths relative to the work directory to their text; `tests` is one pytest module whose
    `test_*` functions are scored by `weights` (test name -> weight, partial credit); `solution` and
    `broken` are bash scripts run in the work directory: the first must score 1, the second below 1.
    """

    id: str
    family: str
    domain: str
    skills: tuple[str, ...]
    instruction: str
    files: dict[str, str]
    tests: str
    weights: dict[str, float]
    solution: str
    broken: str = ""
    agent_timeout: float = 300.0
    verifier_timeout: float = 60.0
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not TASK_ID.match(self.id):
            raise DataError(f"task id {self.id!r} is not a lower-case name of letters, digits, '.', '_' or '-'")
        for path in self.files:
            if not SAFE_PATH.match(path):
                raise DataError(f"task {self.id}: file path {path!r} must be relative, without '..', of plain characters")
        if not self.weights or any(w <= 0 for w in self.weights.values()):
            raise DataError(f"task {self.id}: every test needs a positive weight")
        missing = [name for name in self.weights if not re.search(rf"^def {re.escape(name)}\(", self.tests, re.M)]
        if missing:
            raise DataError(f"task {self.id}: weighted tests {', '.join(missing)} are not defined in its tests")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["skills"] = list(self.skills)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TerminalTask":
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise DataError(f"task record has unknown fields {', '.join(sorted(unknown))}")
        try:
            return cls(**{**data, "skills": tuple(data.get("skills", ())),
                          "weights": {str(k): float(v) for k, v in data["weights"].items()}})
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DataError(f"task record {data.get('id', '?')!r} is malformed: {err}") from None


def write_files(files: dict[str, str], root: Path) -> None:
    """Materialise a task's files under `root` (which must exist), refusing any path that leaves it."""
    root = root.resolve()
    for relative, text in files.items():
        if not SAFE_PATH.match(relative):
            raise DataError(f"file path {relative!r} must be relative, without '..', of plain characters")
        target = (root / relative).resolve()
        if root not in target.parents:
            raise DataError(f"file path {relative!r} leaves the task directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


def write_tasks(tasks: list[TerminalTask], path: Path) -> None:
    """Tasks as JSON lines (one task per line), written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(t.to_dict()) + "\n" for t in tasks), encoding="utf-8")


def read_tasks(path: Path) -> list[TerminalTask]:
    """Tasks from a JSON-lines file written by `lmforge data tasks` or `data synth` (one task per line)."""
    return [TerminalTask.from_dict(record) for _, record in json_records(path, "a task record")]
