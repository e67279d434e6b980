"""Score what an agent left in a task's work directory with the task's weighted pytest tests, in a
fresh sandbox, and check that every task's verifier is itself sound (the reference passes, the
broken solution does not).

The tests run from a read-only directory the agent never saw, with their own pytest config (so a
`conftest.py` or `pytest.ini` planted in the work directory is ignored), Python in isolated mode (the
work directory is not on `sys.path`), and the reward written to a directory outside the work directory.
The score is computed from that reward again here, from the task's own weights.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.data.executors import LocalExecutor
from lmforge.data.terminal import sandbox
from lmforge.data.terminal.task import TerminalTask, write_files
from lmforge.data.terminal.terminal_bench import write_tests


@dataclass
class Verdict:
    """The weighted share of tests passed, each test's outcome, and the verifier's output when it failed."""

    score: float
    passed: dict[str, bool] = field(default_factory=dict)
    output: str = ""
    seconds: float = 0.0


def verify(task: TerminalTask, workdir: Path, limits: sandbox.Limits = sandbox.Limits()) -> Verdict:
    """Run `task`'s verifier (its Terminal-Bench `tests/test.sh`) against `workdir` in a new sandbox.

    The score is the weighted share of tests passed, in [0, 1]; a verifier that writes no reward scores 0.
    """
    with tempfile.TemporaryDirectory(prefix="lmforge-tests-") as tests, \
            tempfile.TemporaryDirectory(prefix="lmforge-logs-") as logs:
        tests, logs = Path(tests), Path(logs)
        tests.chmod(0o755)  # readable by the sandbox's unprivileged user
        write_tests(task, tests)
        outcome = sandbox.run(workdir, "bash /tests/test.sh", timeout=task.verifier_timeout, limits=limits,
                              readonly={"/tests": tests}, writable={"/logs": logs})
        reward = logs / "verifier" / "reward.json"
        try:
            passed = json.loads(reward.read_text(encoding="utf-8"))["passed"] if reward.stat().st_size < 1 << 20 else {}
        except (OSError, ValueError, KeyError, TypeError):
            passed = {}
    passed = {name: passed.get(name) is True for name in task.weights}
    score = sum(w for name, w in task.weights.items() if passed[name]) / sum(task.weights.values())
    return Verdict(score, passed, outcome.output if score < 1 else "", outcome.seconds)


@dataclass
class TaskCheck:
    """Scores of a task's reference and broken solutions, and the seconds the whole check took."""

    reference_score: float
    broken_score: float
    seconds: float
    reference_output: str = ""

    @property
    def sound(self) -> bool:
        return self.reference_score == 1.0 and self.broken_score < 1.0


def solve_and_verify(task: TerminalTask, script: str, limits: sandbox.Limits = sandbox.Limits()) -> tuple[Verdict, str]:
    """Run `script` on a fresh copy of the task's files in a sandbox, then score the result."""
    with tempfile.TemporaryDirectory(prefix="lmforge-task-") as work:
        write_files(task.files, Path(work))
        ran = sandbox.run(Path(work), "set -e\n" + script, timeout=task.agent_timeout, limits=limits)
        return verify(task, Path(work), limits), ran.output


def check_task(task: TerminalTask) -> TaskCheck:
    """Check a task's verifier: its reference solution must score 1 and its broken solution below 1."""
    start = time.monotonic()
    reference, output = solve_and_verify(task, task.solution)
    broken, _ = solve_and_verify(task, task.broken) if task.broken else (Verdict(0.0), "")
    return TaskCheck(reference.score, broken.score, time.monotonic() - start, output + reference.output)


def _check(task: dict) -> TaskCheck:
    return check_task(TerminalTask.from_dict(task))


def check_tasks(tasks: list[TerminalTask], workers: int = 2, progress: bool = False) -> list[TaskCheck]:
    """`check_task` over many tasks on local processes."""
    runner = LocalExecutor(workers)
    return runner.map(_check, [t.to_dict() for t in tasks], desc="checking verifiers", progress=progress)
