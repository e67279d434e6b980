"""Terminal-Bench task directories: lmforge's tasks export to the layout and import back unchanged."""

from __future__ import annotations

import tomllib

import pytest

from lmforge.data.terminal.task import TerminalTask
from lmforge.data.terminal.terminal_bench import export_task, import_task
from lmforge.errors import DataError

TESTS = ("from pathlib import Path\n\ndef test_exists():\n    assert Path('out/total.txt').exists()\n\n"
         "def test_value():\n    assert Path('out/total.txt').read_text().strip() == '6'\n")


def _task() -> TerminalTask:
    return TerminalTask(id="sum-7", family="sum-lines", domain="data_processing",
                        skills=("csv-parsing", "aggregation", "text-transformation"),
                        instruction="Write the sum of the numbers in data/in.txt to out/total.txt.",
                        files={"data/in.txt": "1\n2\n3\n", "README": "numbers, one per line\n"}, tests=TESTS,
                        weights={"test_exists": 1.0, "test_value": 2.5}, solution="mkdir -p out\nawk '{s+=$1} END {print s}' data/in.txt > out/total.txt\n",
                        broken="mkdir -p out\necho 5 > out/total.txt\n", agent_timeout=120.0, verifier_timeout=30.0)


def test_export_writes_the_layout_and_import_reads_it_back(tmp_path):
    task = _task()
    export_task(task, tmp_path / "sum-7")
    root = tmp_path / "sum-7"
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert names == ["environment/Dockerfile", "environment/app/README", "environment/app/data/in.txt",
                     "instruction.md", "solution/broken.sh", "solution/solve.sh", "task.toml", "tests/pytest.ini",
                     "tests/reward.py", "tests/test.sh", "tests/test_outputs.py", "tests/weights.json"]
    config = tomllib.loads((root / "task.toml").read_text())
    assert config["verifier"]["timeout_sec"] == 30.0 and config["agent"]["timeout_sec"] == 120.0
    assert config["metadata"]["category"] == "data_processing"
    back = import_task(root)
    assert back.to_dict() | {"metadata": {}} == task.to_dict()


def test_import_of_a_foreign_task_weights_tests_equally(tmp_path):
    root = tmp_path / "Hello World!"
    (root / "tests").mkdir(parents=True)
    (root / "environment").mkdir()
    (root / "solution").mkdir()
    (root / "instruction.md").write_text("Create hello.txt containing 'Hello, world!'.\n")
    (root / "task.toml").write_text('version = "1.0"\n[metadata]\ncategory = "file_operations"\ntags = ["basics"]\n')
    (root / "environment" / "Dockerfile").write_text("FROM ubuntu:24.04\nWORKDIR /app\n")
    (root / "solution" / "solve.sh").write_text("#!/bin/bash\necho 'Hello, world!' > hello.txt\n")
    (root / "tests" / "test_outputs.py").write_text("def test_file():\n    pass\n\ndef test_content():\n    pass\n")
    task = import_task(root)
    assert task.id == "hello-world" and task.weights == {"test_file": 1.0, "test_content": 1.0}
    assert task.files == {} and task.solution == "echo 'Hello, world!' > hello.txt\n"
    assert task.family == "basics" and task.domain == "file_operations"


def test_import_refuses_what_is_not_a_task(tmp_path):
    with pytest.raises(DataError, match="instruction.md is missing|task.toml is missing"):
        import_task(tmp_path)
