"""File operations: a messy inbox (mixed-case extensions, a nested folder, duplicate files) sorted into
folders by extension, renamed to a normal form, de-duplicated by content, with a sha256 manifest."""

from __future__ import annotations

import hashlib
import random

from lmforge.data.terminal.families import Family
from lmforge.data.terminal.families.common import make_task, mutate, python_step, tests_module
from lmforge.data.terminal.task import TerminalTask

STEMS = ("Invoice_March", "invoice_april", "holiday_photo", "IMG_2041", "IMG_2042", "notes", "Meeting_Notes",
         "budget_2024", "Report_Q3", "scan_0012", "todo", "README", "data_export", "server_log", "Resume_final",
         "contract_draft", "logo", "diagram_v2", "Tax_Return", "recipe", "LICENSE", "setup_guide")
EXTENSIONS = (".txt", ".TXT", ".csv", ".jpg", ".JPG", ".pdf", ".md", ".log", ".json", ".Png", "")
WORDS = ("alpha", "ledger", "river", "quota", "signal", "amber", "vector", "harbor", "cobalt", "meadow")
SUBDIRS = ("old", "archive", "misc", "2023")

SOLUTION = '''
import hashlib
import os
from pathlib import Path

inbox = Path("inbox")
seen, manifest = set(), []
for path in sorted((p for p in inbox.rglob("*") if p.is_file()), key=lambda p: p.relative_to(inbox).as_posix()):
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest in seen:
        path.unlink()
        continue
    seen.add(digest)
    name = path.name.lower().replace("_", "-")
    folder = name.rsplit(".", 1)[1] if "." in name else "other"
    target = Path("sorted", folder, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)
    manifest.append((target.as_posix(), digest))
Path("manifest.sha256").write_text("".join(f"{digest}  {path}\\n" for path, digest in sorted(manifest)))
'''

TESTS = [
    ("test_inbox_emptied", 1, """
        assert not [p for p in Path("inbox").rglob("*") if p.is_file()]
    """),
    ("test_sorted_layout", 3, """
        got = sorted(p.as_posix() for p in Path("sorted").rglob("*") if p.is_file())
        assert got == sorted(EXPECTED)
    """),
    ("test_contents_preserved", 2, """
        for path, digest in EXPECTED.items():
            assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest, path
    """),
    ("test_manifest", 2, """
        assert Path("manifest.sha256").read_text().splitlines() == [f"{EXPECTED[p]}  {p}" for p in sorted(EXPECTED)]
    """),
    ("test_manifest_matches_files", 1, """
        lines = Path("manifest.sha256").read_text().splitlines()
        assert lines
        for line in lines:
            digest, path = re.fullmatch(r"([0-9a-f]{64})  (sorted/[^/]+/[^/]+)", line).groups()
            assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest, path
    """),
]


def _normal(name: str) -> tuple[str, str]:
    """(folder, new name) of an original file name."""
    name = name.lower().replace("_", "-")
    return (name.rsplit(".", 1)[1] if "." in name else "other"), name


def _inbox(rng: random.Random) -> dict[str, str]:
    """Relative path -> content: unique normalised names, some in a subfolder, 2-4 byte-identical copies."""
    files: dict[str, str] = {}
    taken: set[str] = set()
    subdir, count = rng.choice(SUBDIRS), rng.randint(14, 24)
    while len(files) < count:
        name = rng.choice(STEMS) + rng.choice(EXTENSIONS)
        if _normal(name)[1] in taken:
            continue
        taken.add(_normal(name)[1])
        folder = f"inbox/{subdir}/" if rng.random() < 0.25 else "inbox/"
        lines = rng.randint(1, 6)
        files[folder + name] = "".join(f"{rng.choice(WORDS)} {rng.randint(0, 9999)}\n" for _ in range(lines))
    paths = sorted(files)
    for copy in rng.sample(paths, rng.randint(2, 4)):
        files[copy] = files[rng.choice([p for p in paths if p != copy])]
    return files


def _expected(files: dict[str, str]) -> dict[str, str]:
    """Final path -> sha256 of each kept file: the first of each content in byte order of inbox-relative paths."""
    kept, seen = {}, set()
    for path in sorted(files, key=lambda p: p.removeprefix("inbox/")):
        digest = hashlib.sha256(files[path].encode()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            folder, name = _normal(path.rsplit("/", 1)[1])
            kept[f"sorted/{folder}/{name}"] = digest
    return kept


def _build_organize(rng: random.Random, task_id: str) -> TerminalTask:
    files = _inbox(rng)
    instruction = """
        inbox/ holds files downloaded over time, some in a subfolder. Tidy it up:
        - Move every file found anywhere under inbox/ to sorted/<ext>/<new name>, where the new name is the file's
          name in lower case with every '_' replaced by '-', and <ext> is the part of the new name after its last
          '.' (files without a '.' go to sorted/other/).
        - Some files are byte-for-byte copies of others. Go through the files in byte (C locale) order of their
          paths relative to inbox/; a file whose content equals that of a file earlier in this order is a
          duplicate: delete it instead of moving it.
        - Afterwards no file may remain under inbox/ (empty folders may).
        - Write manifest.sha256 with one line per file under sorted/, in the format of `sha256sum`
          (`<hex digest>  <path>`, two spaces), with paths relative to the current directory (sorted/...) and
          lines ordered by path.
    """
    code = python_step(SOLUTION)
    broken = mutate(code, "    if digest in seen:\n        path.unlink()\n        continue\n", "")
    return make_task(ORGANIZE, task_id, instruction=instruction, files=files,
                     tests=tests_module({"EXPECTED": _expected(files)}, TESTS), solution=code, broken=broken,
                     metadata={"broken": "keeps the duplicate files"})


ORGANIZE = Family("organize-inbox", "file_operations", ("globbing", "moving-files", "renaming", "hashing", "manifests"),
                  _build_organize)

FAMILIES = (ORGANIZE,)
