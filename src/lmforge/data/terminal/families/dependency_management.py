"""Dependency management: a local package index (one JSON file per package: its versions and what each
requires) and a requirements.txt, resolved into a lock file of exact versions in install order."""

from __future__ import annotations

import heapq
import json
import random
from dataclasses import dataclass

from lmforge.data.terminal.families import Family
from lmforge.data.terminal.families.common import make_task, mutate, python_step, tests_module
from lmforge.data.terminal.task import TerminalTask

NAMES = ("aiolink", "bytepack", "cachet", "datapipe", "eventry", "fluxcore", "gridkit", "hashring", "iterx",
         "jsonfast", "kvstore", "logfmt", "mathx", "netio", "parsely", "quickcache", "retryer", "schemax",
         "tinyurl", "vecops", "yamlite", "zipkit")
Version = tuple[int, int, int]

SOLUTION = '''
import heapq
import json
import re
from pathlib import Path


def vkey(version):
    return tuple(int(part) for part in version.split("."))


def satisfies(version, spec):
    for clause in filter(None, (c.strip() for c in spec.split(","))):
        op, bound = re.fullmatch(r"(>=|<=|==|!=|>|<)\\s*(\\S+)", clause).groups()
        a, b = vkey(version), vkey(bound)
        if not {">=": a >= b, "<=": a <= b, "==": a == b, "!=": a != b, ">": a > b, "<": a < b}[op]:
            return False
    return True


index = {}
for path in Path("index").glob("*.json"):
    package = json.loads(path.read_text())
    index[package["name"]] = package["versions"]
constraints = {name: [] for name in index}
needed = set()
for line in Path("requirements.txt").read_text().splitlines():
    line = line.split("#")[0].strip()
    if line:
        name, spec = re.fullmatch(r"([A-Za-z0-9_.-]+)\\s*(.*)", line).groups()
        needed.add(name)
        constraints[name].append(spec)

graph = {name: {dep for v in versions.values() for dep in v["requires"]} for name, versions in index.items()}
dependents = {name: 0 for name in index}
for deps in graph.values():
    for dep in deps:
        dependents[dep] += 1
queue, order = [name for name, count in dependents.items() if count == 0], []
while queue:
    name = queue.pop()
    order.append(name)
    for dep in graph[name]:
        dependents[dep] -= 1
        if dependents[dep] == 0:
            queue.append(dep)

chosen = {}
for name in order:
    if name in needed:
        allowed = [v for v in index[name] if all(satisfies(v, spec) for spec in constraints[name])]
        chosen[name] = max(allowed, key=vkey)
        for dep, spec in index[name][chosen[name]]["requires"].items():
            needed.add(dep)
            constraints[dep].append(spec)

waiting = {name: set(index[name][v]["requires"]) for name, v in chosen.items()}
ready = [name for name, deps in waiting.items() if not deps]
heapq.heapify(ready)
lines = []
while ready:
    name = heapq.heappop(ready)
    lines.append(f"{name}=={chosen[name]}")
    for other, deps in waiting.items():
        if name in deps:
            deps.discard(name)
            if not deps:
                heapq.heappush(ready, other)
Path("requirements.lock").write_text("\\n".join(lines) + "\\n")
'''

TESTS = [
    ("test_lock_exists", 1, """
        assert lock_lines()
    """),
    ("test_line_format", 1, """
        lines = lock_lines()
        assert all(re.fullmatch(r"[a-z][a-z0-9_-]*==[0-9]+[.][0-9]+[.][0-9]+", line) for line in lines)
        assert len({line.split("==")[0] for line in lines}) == len(lines)
    """),
    ("test_package_set", 2, """
        assert sorted(line.split("==")[0] for line in lock_lines()) == sorted(EXPECTED)
    """),
    ("test_versions", 3, """
        assert dict(line.split("==") for line in lock_lines()) == EXPECTED
    """),
    ("test_install_order", 2, """
        assert [line.split("==")[0] for line in lock_lines()] == ORDER
    """),
]

LOADER = """
def lock_lines():
    return [line.strip() for line in Path("requirements.lock").read_text().splitlines() if line.strip()]
"""


def _text(v: Version) -> str:
    return ".".join(map(str, v))


def _key(version: str) -> Version:
    major, minor, patch = map(int, version.split("."))
    return major, minor, patch


@dataclass
class Index:
    """Package names in dependency order (a package only requires later ones), their ascending versions,
    an anchor per package (a version index every constraint on it allows) and what each version requires."""

    names: list[str]
    versions: list[list[Version]]
    anchors: list[int]
    requires: list[dict[str, dict[str, str]]]  # per package: version -> {dependency: constraint}


def _versions(rng: random.Random, trap: bool) -> list[Version]:
    """Ascending versions; with `trap`, the newest two are x.9.y and x.1N.z (newer only numerically)."""
    major, minor, patch = rng.randint(0, 2), rng.randint(0, 3), rng.randint(0, 4)
    out = [(major, minor, patch)]
    for _ in range(rng.randint(2, 4)):
        step = rng.random()
        if step < 0.5:
            patch += rng.randint(1, 3)
        elif step < 0.85 and minor <= 5:
            minor, patch = minor + rng.randint(1, 3), 0
        else:
            major, minor, patch = major + 1, 0, 0
        out.append((major, minor, patch))
    if trap:
        out += [(major, 9, rng.randint(0, 4)), (major, rng.randint(10, 14), rng.randint(0, 2))]
    return out


def _constraint(rng: random.Random, versions: list[Version], anchor: int) -> str:
    """1-2 clauses that all allow versions[anchor], so every set of constraints on a package can be met."""
    clauses = []
    for kind in rng.sample(("lower", "upper", "not"), rng.choice((1, 1, 2))):
        if kind == "lower":
            op = rng.choice((">=", ">")) if anchor else ">="
            clauses.append(f"{op}{_text(versions[rng.randint(0, anchor - (op == '>'))])}")
        elif kind == "upper" and anchor + 1 < len(versions):
            clauses.append(f"<{_text(versions[rng.randint(anchor + 1, len(versions) - 1)])}")
        elif kind == "upper":
            clauses.append(f"<{versions[-1][0] + 1}.0.0")
        elif len(versions) > 1:
            clauses.append(f"!={_text(rng.choice([v for i, v in enumerate(versions) if i != anchor]))}")
    return ",".join(clauses) or f">={_text(versions[0])}"


def _index(rng: random.Random) -> Index:
    """A random index; the first package always carries the x.9 / x.1N version trap."""
    names = rng.sample(NAMES, rng.randint(7, 10))
    versions = [_versions(rng, trap=i == 0 or rng.random() < 0.25) for i in range(len(names))]
    anchors = [rng.randrange(len(v)) for v in versions]
    requires = []
    for i in range(len(names)):
        later = list(range(i + 1, len(names)))
        usual = set(rng.sample(later, min(len(later), rng.randint(0, 3))))
        requires.append({})
        for v in versions[i]:
            deps = usual ^ ({rng.choice(later)} if later and rng.random() < 0.3 else set())
            requires[i][_text(v)] = {names[j]: _constraint(rng, versions[j], anchors[j]) for j in sorted(deps)}
    return Index(names, versions, anchors, requires)


def _satisfies(version: str, spec: str) -> bool:
    key = _key(version)
    for clause in filter(None, spec.split(",")):
        op = clause[:2] if clause[1] == "=" else clause[:1]
        bound = _key(clause[len(op):])
        if not {">=": key >= bound, "<=": key <= bound, "==": key == bound, "!=": key != bound,
                ">": key > bound, "<": key < bound}[op]:
            return False
    return True


def _resolve(index: Index, requirements: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The chosen versions (decided in dependency order, highest allowed) and the lock's install order."""
    constraints = {name: [spec] for name, spec in requirements.items()}
    chosen: dict[str, str] = {}
    for name, requires in zip(index.names, index.requires):
        if name in constraints:
            chosen[name] = max((v for v in requires if all(_satisfies(v, c) for c in constraints[name])), key=_key)
            for dep, spec in requires[chosen[name]].items():
                constraints.setdefault(dep, []).append(spec)
    waiting = {name: set(index.requires[index.names.index(name)][v]) for name, v in chosen.items()}
    ready = sorted(name for name, deps in waiting.items() if not deps)
    order: list[str] = []
    while ready:
        order.append(heapq.heappop(ready))
        for name, deps in waiting.items():
            if order[-1] in deps:
                deps.discard(order[-1])
                if not deps:
                    heapq.heappush(ready, name)
    return chosen, order


def _requirements(rng: random.Random, index: Index) -> dict[str, str]:
    """Top-level requirements: the first package (only a lower bound, so its trap decides) and 1-2 others."""
    reqs = {index.names[0]: f">={_text(index.versions[0][0])}"}
    for i in rng.sample(range(1, 4), rng.randint(1, 2)):
        reqs[index.names[i]] = rng.choice(("", _constraint(rng, index.versions[i], index.anchors[i])))
    return reqs


def _build_lock(rng: random.Random, task_id: str) -> TerminalTask:
    index = _index(rng)
    reqs = _requirements(rng, index)
    chosen, order = _resolve(index, reqs)
    files = {"requirements.txt": "# direct dependencies of the service\n"
             + "".join(f"{name}{spec}\n" for name, spec in sorted(reqs.items()))}
    for name, requires in zip(index.names, index.requires):
        listed = list(requires.items())
        rng.shuffle(listed)
        files[f"index/{name}.json"] = json.dumps({"name": name, "versions": {
            v: {"requires": deps} for v, deps in listed}}, indent=2) + "\n"
    instruction = """
        index/ is a local package index: one JSON file per package, {"name": ..., "versions": {version:
        {"requires": {package: constraint}}}}. requirements.txt lists the direct dependencies, one per line
        (a name followed by an optional constraint; '#' starts a comment). A constraint is a comma-separated
        list of clauses, each an operator (>=, <=, >, <, ==, !=) and a version, all of which must hold; an empty
        constraint allows any version. Versions are compared numerically part by part (1.10.0 is newer than
        1.9.3).

        Resolve the dependencies into requirements.lock. Decide packages one at a time, each only after every
        package that could require it (in any of its versions) has been decided; the graph of which package
        can require which has no cycles. A package is needed when requirements.txt names it or when the chosen
        version of a needed package requires it. For each needed package choose the highest version that
        satisfies every constraint on it (from requirements.txt and from the chosen versions of the needed
        packages that require it); the index guarantees that one exists. Leave out packages that are not needed.

        Write one line `name==version` per needed package, ordered so that each package comes after every
        package its chosen version requires; whenever several packages could come next, write the
        alphabetically first one.
    """
    code = python_step(SOLUTION)
    broken = mutate(code, "max(allowed, key=vkey)", "max(allowed)")
    return make_task(LOCK, task_id, instruction=instruction, files=files,
                     tests=tests_module({"EXPECTED": chosen, "ORDER": order}, TESTS, LOADER), solution=code,
                     broken=broken, metadata={"broken": "picks the highest version by string comparison"})


LOCK = Family("resolve-lock-file", "dependency_management",
              ("version-constraints", "dependency-graph", "lock-files", "topological-order"), _build_lock)

FAMILIES = (LOCK,)
