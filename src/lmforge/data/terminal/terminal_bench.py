"""Terminal-Bench's task layout (the Harbor format of Terminal-Bench 2.0), written and read, so tasks move
between lmforge and that ecosystem:

    instruction.md          what the agent is told
    task.toml               metadata and timeouts ([metadata], [agent], [verifier], [environment])
    environment/Dockerfile  a Python image with pytest, the task's files copied into /app
    environment/app/...     the task's files
    solution/solve.sh       the reference solution (solution/broken.sh: lmforge's broken one, for checking)
    tests/test.sh           the verifier: pytest on test_outputs.py, then the weighted reward
    tests/test_outputs.py   the tests; tests/weights.json their weights; tests/reward.py the scoring

The verifier writes `/logs/verifier/reward.txt` (the weighted share of tests passed) and `reward.json`
(each test's outcome), as Harbor reads them. lmforge's own verifier runs this same `tests/` directory in
its sandbox, so an exported task is scored the same way in both places.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from lmforge.data.terminal.task import WORKDIR, TerminalTask, write_files
from lmforge.errors import DataError
from lmforge.fileio import OutputKind, atomic_dir, write_json

TEST_SH = f"""#!/bin/bash
# The verifier: run the tests against {WORKDIR}, then weight the passed ones into the reward.
mkdir -p /logs/verifier
cd {WORKDIR}
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -I -B -m pytest /tests/test_outputs.py -c /tests/pytest.ini -q \\
    -p no:cacheprovider -o junit_family=xunit1 --junitxml=/logs/verifier/junit.xml
python3 -I -B /tests/reward.py /logs/verifier/junit.xml /tests/weights.json /logs/verifier
"""

REWARD_PY = '''"""Weighted reward from a pytest junit report: reward.txt (a share in [0, 1]) and reward.json (each test)."""
import json
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

report, weights, out = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text()), Path(sys.argv[3])
passed = dict.fromkeys(weights, False)
if report.is_file() and report.stat().st_size < (4 << 20):
    try:
        cases = list(ElementTree.parse(report).getroot().iter("testcase"))
    except ElementTree.ParseError:
        cases = []
    seen = {}
    for case in cases:
        name = case.get("name", "").split("[", 1)[0]
        ok = not any(child.tag in ("failure", "error", "skipped") for child in case)
        seen[name] = seen.get(name, True) and ok
    passed.update({name: seen.get(name, False) for name in weights})
reward = sum(w for name, w in weights.items() if passed[name]) / sum(weights.values())
(out / "reward.json").write_text(json.dumps({"reward": reward, "passed": passed}))
(out / "reward.txt").write_text(f"{reward}\\n")
'''

DOCKERFILE = f"""FROM python:3.11-slim
RUN pip install --no-cache-dir pytest
WORKDIR {WORKDIR}
COPY app/ {WORKDIR}/
"""


def write_tests(task: TerminalTask, tests: Path) -> None:
    """The verifier directory of `task` (Terminal-Bench's `tests/`), into the existing directory `tests`."""
    (tests / "test.sh").write_text(TEST_SH, encoding="utf-8")
    (tests / "test.sh").chmod(0o755)
    (tests / "test_outputs.py").write_text(task.tests, encoding="utf-8")
    (tests / "pytest.ini").write_text("[pytest]\naddopts =\n", encoding="utf-8")
    (tests / "weights.json").write_text(json.dumps(task.weights, indent=1), encoding="utf-8")
    (tests / "reward.py").write_text(REWARD_PY, encoding="utf-8")


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid TOML basic string


def _task_toml(task: TerminalTask) -> str:
    tags = ", ".join(_toml_string(t) for t in (task.family, *task.skills))
    return (f'version = "1.0"\n\n[metadata]\nauthor_name = "lmforge"\ndifficulty = "medium"\n'
            f"category = {_toml_string(task.domain)}\ntags = [{tags}]\n"
            f"lmforge_id = {_toml_string(task.id)}\nlmforge_family = {_toml_string(task.family)}\n\n"
            f"[verifier]\ntimeout_sec = {float(task.verifier_timeout)}\n\n"
            f"[agent]\ntimeout_sec = {float(task.agent_timeout)}\n\n"
            "[environment]\nbuild_timeout_sec = 600.0\ncpus = 1\nmemory_mb = 2048\nstorage_mb = 1024\n")


def _script(body: str) -> str:
    return f"#!/bin/bash\nset -e\ncd {WORKDIR}\n{body.rstrip()}\n"


def export_task(task: TerminalTask, directory: Path) -> None:
    """Write `task` as a Terminal-Bench task directory (atomically: a crash leaves no half-written task)."""
    with atomic_dir(directory) as root:
        (root / "instruction.md").write_text(task.instruction.rstrip() + "\n", encoding="utf-8")
        (root / "task.toml").write_text(_task_toml(task), encoding="utf-8")
        (root / "environment" / "app").mkdir(parents=True)
        (root / "environment" / "Dockerfile").write_text(DOCKERFILE, encoding="utf-8")
        write_files(task.files, root / "environment" / "app")
        (root / "solution").mkdir()
        (root / "solution" / "solve.sh").write_text(_script(task.solution), encoding="utf-8")
        if task.broken:
            (root / "solution" / "broken.sh").write_text(_script(task.broken), encoding="utf-8")
        (root / "tests").mkdir()
        write_tests(task, root / "tests")


TASK_SET = OutputKind("directory of Terminal-Bench tasks", "lmforge-tasks.json", "tasks", frozenset({"*"}))


def export_tasks(tasks: list[TerminalTask], directory: Path) -> None:
    """Write each task as `directory/<task id>/` in Terminal-Bench's layout, and a list of them."""
    directory.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        export_task(task, directory / task.id)
    write_json(directory / TASK_SET.marker, {"tasks": [t.id for t in tasks]})


def _solution_body(path: Path) -> str:
    if not path.is_file():
        return ""
    lines = path.read_text(encoding="utf-8").splitlines()
    prologue = {"#!/bin/bash", "#!/usr/bin/env bash", "set -e", f"cd {WORKDIR}"}
    while lines and lines[0].strip() in prologue:
        lines.pop(0)
    return "\n".join(lines) + "\n"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-.")[:128] or "task"


def import_task(directory: Path) -> TerminalTask:
    """Read a Terminal-Bench task directory into a `TerminalTask`.

    The files under `environment/` other than the Dockerfile become the task's files (what a Dockerfile
    would copy into the work directory); tests are weighted by `tests/weights.json` when present, else
    equally. A task whose environment needs more than files (services, packages) imports, but runs here
    only as far as the sandbox's tools allow.
    """
    directory = Path(directory)
    try:
        config = tomllib.loads((directory / "task.toml").read_text(encoding="utf-8"))
        instruction = (directory / "instruction.md").read_text(encoding="utf-8")
        tests = (directory / "tests" / "test_outputs.py").read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise DataError(f"{directory} is not a Terminal-Bench task: {Path(err.filename).name} is missing") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{directory}/task.toml cannot be read: {err}") from None
    metadata = config.get("metadata", {})
    weights_file = directory / "tests" / "weights.json"
    if weights_file.is_file():
        weights = json.loads(weights_file.read_text(encoding="utf-8"))
    else:
        weights = {name: 1.0 for name in re.findall(r"^def (test_\w+)\(", tests, re.M)}
    environment = directory / "environment"
    root = environment / "app" if (environment / "app").is_dir() else environment
    files = {}
    for path in sorted(root.rglob("*")) if root.is_dir() else []:
        if path.is_file() and path.name != "Dockerfile" and path.name != "docker-compose.yaml":
            try:
                files[path.relative_to(root).as_posix()] = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{path} is not text; lmforge's tasks carry text files only") from None
    tags = [str(t) for t in metadata.get("tags", [])]
    family = str(metadata.get("lmforge_family", tags[0] if tags else _slug(directory.name)))
    return TerminalTask(
        id=_slug(str(metadata.get("lmforge_id", directory.name))), family=family,
        domain=str(metadata.get("category", "unknown")), skills=tuple(t for t in tags if t != family),
        instruction=instruction.strip(), files=files, tests=tests, weights=weights,
        solution=_solution_body(directory / "solution" / "solve.sh"),
        broken=_solution_body(directory / "solution" / "broken.sh"),
        agent_timeout=float(config.get("agent", {}).get("timeout_sec", 300.0)),
        verifier_timeout=float(config.get("verifier", {}).get("timeout_sec", 60.0)),
        metadata={"source": str(directory)})
