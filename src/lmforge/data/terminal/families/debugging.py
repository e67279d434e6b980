"""Debugging: a small utility module with one planted bug (off-by-one, wrong boundary, wrong formula) and a
user's report of the symptom; the module must be fixed in place without breaking its other functions."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Callable

from lmforge.data.terminal.families import Family
from lmforge.data.terminal.families.common import RUN_HELPER, make_task, mutate, python_step, tests_module
from lmforge.data.terminal.task import TerminalTask

SOURCES = {
    "page_count": '''def page_count(total, per_page):
    """Number of pages needed to show `total` items, `per_page` to a page (0 items need 0 pages)."""
    return (total + per_page - 1) // per_page
''',
    "paginate": '''def paginate(items, page, per_page):
    """The items shown on page `page` (pages are numbered from 1), `per_page` to a page."""
    start = (page - 1) * per_page
    return items[start:start + per_page]
''',
    "moving_average": '''def moving_average(values, window):
    """The mean of every run of `window` consecutive values, in order (len(values) - window + 1 of them)."""
    return [sum(values[i:i + window]) / window for i in range(len(values) - window + 1)]
''',
    "parse_range": '''def parse_range(text):
    """The integers of "a-b", both ends included (none when b < a), or [a] for a single number "a"."""
    first, _, last = text.partition("-")
    start = int(first)
    end = int(last) if last else start
    return list(range(start, end + 1))
''',
    "median": '''def median(values):
    """The middle value of `values`, or the mean of the two middle values when their number is even."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2
''',
    "is_valid_port": '''def is_valid_port(port):
    """Whether `port` is a usable TCP port number: 1 to 65535, both included."""
    return 1 <= port <= 65535
''',
}


@dataclass(frozen=True)
class Bug:
    """A planted bug: the correct text, its buggy replacement, a plausible but wrong fix, and the symptom."""

    function: str
    correct: str
    buggy: str
    bad_fix: str
    symptom: Callable[[random.Random], tuple[str, list]]  # rng -> (report, the reported call's arguments)


def _page_count_symptom(rng: random.Random) -> tuple[str, list]:
    per_page = rng.randint(3, 9)
    total = per_page * rng.randint(2, 6) + rng.randint(1, per_page - 1)
    return (f"page_count({total}, {per_page}) returns {total // per_page}, one page too few for {total} items at "
            f"{per_page} per page.", [total, per_page])


def _paginate_symptom(rng: random.Random) -> tuple[str, list]:
    n, per_page = rng.randint(12, 30), rng.randint(3, 6)
    return (f"paginate(list(range(1, {n + 1})), 1, {per_page}) does not return the first {per_page} items: "
            "the first page shows the wrong items.", [list(range(1, n + 1)), 1, per_page])


def _moving_average_symptom(rng: random.Random) -> tuple[str, list]:
    values = [rng.randint(1, 20) for _ in range(rng.randint(5, 8))]
    window = 2
    return (f"moving_average({values}, {window}) returns {len(values) - window} averages; the last window is "
            "missing.", [values, window])


def _parse_range_symptom(rng: random.Random) -> tuple[str, list]:
    start = rng.randint(1, 20)
    end = start + rng.randint(2, 9)
    return f'parse_range("{start}-{end}") does not include {end}.', [f"{start}-{end}"]


def _median_symptom(rng: random.Random) -> tuple[str, list]:
    values = sorted(rng.sample(range(1, 60), 4))
    if (values[1] + values[2]) % 2:
        values[2] += 1 if values[2] + 1 < values[3] else -1
    return (f"median({values}) returns {(values[2] + values[3]) / 2} instead of the mean of the two middle "
            "values.", [values])


def _port_symptom(rng: random.Random) -> tuple[str, list]:
    return "is_valid_port(1) returns False, but 1 is a valid port.", [1]


BUGS = (
    Bug("page_count", "return (total + per_page - 1) // per_page", "return total // per_page",
        "return total // per_page + 1", _page_count_symptom),
    Bug("paginate", "start = (page - 1) * per_page", "start = page * per_page",
        "start = 0 if page == 1 else page * per_page", _paginate_symptom),
    Bug("moving_average", "for i in range(len(values) - window + 1)]", "for i in range(len(values) - window)]",
        "for i in range(len(values) - 1)]", _moving_average_symptom),
    Bug("parse_range", "return list(range(start, end + 1))", "return list(range(start, end))",
        "return list(range(start, end)) + [end]", _parse_range_symptom),
    Bug("median", "return (ordered[mid - 1] + ordered[mid]) / 2", "return (ordered[mid] + ordered[mid + 1]) / 2",
        "return (ordered[mid - 1] + ordered[mid]) // 2", _median_symptom),
    Bug("is_valid_port", "return 1 <= port <= 65535", "return 1 < port < 65535", "return 1 <= port < 65535",
        _port_symptom),
)

MODULES = ("toolbox", "helpers", "listkit", "utilkit", "common_utils")


def _cases(rng: random.Random, function: str) -> list[list]:
    """Argument lists exercising `function`, its edge cases included (where the plausible wrong fixes fail)."""
    if function == "page_count":
        return [[0, 4], [12, 4], [13, 4], [1, 1]] + [[rng.randint(0, 99), rng.randint(1, 9)] for _ in range(4)]
    if function == "paginate":
        items = list(range(1, rng.randint(15, 40)))
        per_page = rng.randint(2, 6)
        return [[items, page, per_page] for page in range(1, len(items) // per_page + 3)]
    if function == "moving_average":
        values = [rng.randint(-9, 30) for _ in range(rng.randint(6, 12))]
        return [[values, window] for window in (1, 3, 4, len(values))]
    if function == "parse_range":
        a = rng.randint(1, 50)
        return [[f"{a}-{a + rng.randint(1, 9)}"], [f"{a}-{a}"], [f"{a + 5}-{a}"], [str(a)]]
    if function == "median":
        return [[[1, 2, 3, 4]], [[7, 2]], [rng.sample(range(100), 5)], [rng.sample(range(100), 6)], [[5]]]
    return [[0], [1], [2], [80], [65534], [65535], [65536], [rng.randint(1024, 60000)]]


def _expected(source: str, function: str, cases: list[list]) -> list:
    """What the correct `function` returns for each case, as JSON would carry it back."""
    namespace: dict = {}
    exec(source, namespace)  # our own correct module text, to compute the tests' expected values
    return json.loads(json.dumps([namespace[function](*args) for args in cases]))


TESTS = [
    ("test_module_imports", 1, """
        done = run("-c", f"import {MODULE}")
        assert done.returncode == 0, done.stderr
    """),
    ("test_reported_example", 1, """
        assert same(call(FUNCTION, [REPORTED]), [REPORTED_RESULT])
    """),
    ("test_fixed_function", 3, """
        assert same(call(FUNCTION, CASES[FUNCTION]), EXPECTED[FUNCTION])
    """),
    ("test_other_functions_still_work", 2, """
        for name in EXPECTED:
            if name != FUNCTION:
                assert same(call(name, CASES[name]), EXPECTED[name]), name
    """),
]

HELPERS = RUN_HELPER + '''

CALLER = """import json, sys
import {module} as m
out = []
for args in json.loads(sys.stdin.read()):
    try:
        out.append(getattr(m, {function!r})(*args))
    except Exception as err:
        out.append("raised " + type(err).__name__)
print(json.dumps(out))
"""


def call(function, cases):
    done = run("-c", CALLER.format(module=MODULE, function=function), stdin=json.dumps(cases))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def same(got, want):
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(same(a, b) for a, b in zip(got, want))
    if isinstance(want, float) or isinstance(got, float):
        return isinstance(got, (int, float)) and not isinstance(got, bool) and math.isclose(got, want, rel_tol=1e-9)
    return type(got) is type(want) and got == want
'''

PATCH = '''
from pathlib import Path

path = Path(FILE)
text = path.read_text()
assert text.count(OLD) == 1, "the code to change is not where it was"
path.write_text(text.replace(OLD, NEW))
'''


def _patch(file: str, old: str, new: str) -> str:
    return python_step(f"FILE, OLD, NEW = {file!r}, {old!r}, {new!r}\n" + PATCH)


def _build_fix(rng: random.Random, task_id: str) -> TerminalTask:
    bug = rng.choice(BUGS)
    module = rng.choice(MODULES)
    names = list(SOURCES)
    rng.shuffle(names)
    source = '"""Small helpers shared by our scripts."""\n\n\n' + "\n\n".join(SOURCES[n] for n in names)
    buggy = mutate(source, bug.correct, bug.buggy)
    report, reported = bug.symptom(rng)
    cases = {name: _cases(rng, name) for name in names}
    expected = {name: _expected(source, name, cases[name]) for name in names}
    constants = {"MODULE": module, "FUNCTION": bug.function, "CASES": cases, "EXPECTED": expected,
                 "REPORTED": reported, "REPORTED_RESULT": _expected(source, bug.function, [reported])[0]}
    instruction = f"""
        {module}.py is a small module of helper functions used by other scripts. A user reports:

            {report}

        Find the bug and fix it in place in {module}.py. Each function must do what its docstring says; keep the
        function names and signatures, and do not break the other functions.
    """
    return make_task(FIX, task_id, instruction=instruction, files={f"{module}.py": buggy},
                     tests=tests_module(constants, TESTS, HELPERS),
                     solution=_patch(f"{module}.py", bug.buggy, bug.correct),
                     broken=_patch(f"{module}.py", bug.buggy, bug.bad_fix),
                     metadata={"bug": bug.function, "broken": f"a fix that only covers the report: {bug.bad_fix}"})


FIX = Family("fix-planted-bug", "debugging",
             ("reading-code", "reproducing-failures", "python", "boundary-conditions", "regression-checks"), _build_fix)

FAMILIES = (FIX,)
