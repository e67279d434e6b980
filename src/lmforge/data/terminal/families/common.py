"""Helpers shared by the task families: the weighted tests module, bash wrappers around embedded Python,
CSV text, and the assembly of a `TerminalTask` from a family's declaration.

Tests embed the expected values the generator computed (they are hidden from the agent), so an agent
that rewrites the input files cannot move the target; code the agent wrote runs only in a subprocess.
"""

from __future__ import annotations

import csv
import io
import textwrap
from typing import TYPE_CHECKING

from lmforge.data.terminal.task import TerminalTask

if TYPE_CHECKING:
    from lmforge.data.terminal.families import Family

Test = tuple[str, float, str]  # (test function name, weight, function body)

CWD_NOTE = ("The working directory is the current directory: the input files are there, and every output file "
            "must be written there (paths below are relative to it).")

TEST_IMPORTS = """import csv
import hashlib
import json
import math
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
"""

# Runs agent code (a script or `python -c` snippet) in a child interpreter, never in the test process.
RUN_HELPER = '''
def run(*args, stdin=None):
    return subprocess.run([sys.executable, "-B", *args], capture_output=True, text=True, input=stdin, timeout=10)
'''


def tests_module(constants: dict, tests: list[Test], helpers: str = "") -> tuple[str, dict[str, float]]:
    """A pytest module (standard library only) and its weights, from constants, helper code and test bodies.

    `constants` become module-level names (their repr), so expected values live in the hidden tests.
    """
    parts = [TEST_IMPORTS.strip()]
    parts += [f"{name} = {value!r}" for name, value in constants.items()]
    if helpers:
        parts.append(textwrap.dedent(helpers).strip("\n"))
    for name, _, body in tests:
        parts.append(f"def {name}():\n" + textwrap.indent(textwrap.dedent(body).strip("\n"), "    "))
    return "\n\n\n".join(parts) + "\n", {name: float(weight) for name, weight, _ in tests}


def json_reader(function: str, path: str) -> str:
    """Helper code for a tests module: `function()` returns the parsed JSON output file at `path`."""
    return f"def {function}():\n    return json.loads(Path({path!r}).read_text())\n"


def python_step(code: str) -> str:
    """A bash step that runs `code` with `python3` from a quoted heredoc (so bash expands nothing in it)."""
    return f"python3 - <<'PYEOF'\n{textwrap.dedent(code).strip()}\nPYEOF\n"


def mutate(text: str, old: str, new: str) -> str:
    """`text` with its one occurrence of `old` replaced by `new`: how a broken script is derived from the reference."""
    if text.count(old) != 1:
        raise ValueError(f"expected exactly one {old!r} to replace")
    return text.replace(old, new)


def csv_text(rows: list[list]) -> str:
    """Rows (header first) as CSV text with '\\n' line endings."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def make_task(family: Family, task_id: str, *, instruction: str, files: dict[str, str],
              tests: tuple[str, dict[str, float]], solution: str, broken: str, metadata: dict | None = None,
              ) -> TerminalTask:
    """The finished task of `family`: the instruction gets the note on the working directory appended."""
    module, weights = tests
    return TerminalTask(id=task_id, family=family.name, domain=family.domain, skills=family.skills,
                        instruction=textwrap.dedent(instruction).strip() + "\n\n" + CWD_NOTE, files=files,
                        tests=module, weights=weights, solution=solution, broken=broken, metadata=metadata or {})
