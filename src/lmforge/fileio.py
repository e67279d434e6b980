"""Safe output: atomic writes, and a check that an output path destroys nothing lmforge did not write.

Every writer goes to a temporary sibling first and is renamed into place, so readers
see either the old complete file or the new complete file. Temporaries carry the writer's
process id, so a later run removes those a killed run left behind. `claim_output` is the
one rule every command applies to its output path before it starts any work.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from lmforge.errors import OutputError


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> None:
    """Delete the temporaries of `path` that a killed writer left (their process is gone)."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    for entry in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        pid = entry.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def glob_escape(name: str) -> str:
    """`name` with glob metacharacters escaped."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _make_parent(path: Path) -> None:
    _creating(path, lambda: path.parent.mkdir(parents=True, exist_ok=True))


def _creating(path: Path, make):
    """Run `make` (which creates something beside `path`), turning an OS refusal into a one-line error."""
    try:
        return make()
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}; choose another output path") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it onto `path`.

    On any exception (including KeyboardInterrupt) the temporary file is removed and
    `path` is left untouched.
    """
    path = Path(path)
    _make_parent(path)
    remove_stale_temporaries(path)
    fd, tmp = _creating(path, lambda: tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write a UTF-8 text file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write `obj` as indented JSON."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces `path` as a whole.

    The swap is two renames (old -> backup, new -> path); `recover_dir` restores the
    backup if a crash falls between them.
    """
    path = Path(path)
    _make_parent(path)
    remove_stale_temporaries(path)
    tmp = Path(_creating(path, lambda: tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)))
    os.chmod(tmp, 0o777 & ~_umask())
    backup = path.with_name(f".{path.name}.old")
    try:
        yield tmp
        if backup.exists():
            shutil.rmtree(backup)
        if path.exists():
            os.replace(path, backup)
        os.replace(tmp, path)
        shutil.rmtree(backup, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def recover_dir(path: str | os.PathLike) -> Path:
    """Return `path`, first restoring it from the backup an interrupted `atomic_dir` swap left."""
    path = Path(path)
    backup = path.with_name(f".{path.name}.old")
    if not path.exists() and backup.exists():
        os.replace(backup, path)
    return path


@dataclass(frozen=True)
class OutputKind:
    """What one kind of command writes at its output path, so that a later run recognises it.

    A directory kind holds `marker` (a JSON file with the top-level key `marker_key`) and
    nothing but entries matching `names` (glob patterns); a file kind starts with `magic`.
    """

    description: str
    marker: str = ""
    marker_key: str = ""
    names: frozenset[str] = frozenset()
    magic: bytes = b""

    @property
    def is_dir(self) -> bool:
        return bool(self.marker)

    def foreign_entry(self, path: Path) -> str | None:
        """None when `path` holds exactly what this kind writes, else the first thing that does not belong."""
        if not self.is_dir:
            with open(path, "rb") as f:
                return None if f.read(len(self.magic)) == self.magic else path.name
        entries = sorted(os.listdir(path))
        strangers = [e for e in entries if not any(fnmatch.fnmatchcase(e, pattern) for pattern in self.names)]
        if strangers:
            return strangers[0]
        try:
            marker = json.loads((path / self.marker).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return self.marker
        return None if isinstance(marker, dict) and self.marker_key in marker else self.marker


def _relation(output: Path, source: Path) -> str | None:
    if output == source:
        return "is"
    if source in output.parents:
        return "is inside"
    if output in source.parents:
        return "contains"
    return None


def refuse_overlap(path: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> None:
    """Refuse an output path that is, lies inside, or contains one of `inputs`."""
    resolved = Path(path).expanduser().resolve()
    for source in inputs:
        relation = _relation(resolved, Path(source).expanduser().resolve())
        if relation:
            raise OutputError(f"the output {path} {relation} the input {source}; write the output somewhere else")


def claim_output(
    path: str | os.PathLike,
    kind: OutputKind,
    inputs: Iterable[str | os.PathLike] = (),
    overwrite: bool = False,
    overwrite_hint: str = "pass --overwrite",
) -> Path:
    """Check, before any work starts, that writing a `kind` at `path` destroys nothing lmforge did not write.

    The path may be new, an empty directory, or hold exactly what this kind of command
    wrote there before, and then only with `overwrite`. It must not be, lie inside, or
    contain one of `inputs`, and its nearest existing ancestor must be writable.
    Returns `path`; raises OutputError saying what is wrong and how to proceed.
    """
    path = Path(path)
    refuse_overlap(path, inputs)
    if path.is_symlink() or path.exists():
        if kind.is_dir and not path.is_dir():
            raise OutputError(f"{path} is a file, but a {kind.description} goes there; choose another output path")
        if not kind.is_dir and not path.is_file():
            raise OutputError(f"{path} is not a file, but a {kind.description} goes there; choose another output path")
        if not (kind.is_dir and not os.listdir(path)):
            foreign = kind.foreign_entry(path)
            if foreign is not None:
                what = f"holds {foreign!r}, which" if kind.is_dir else "is a file that"
                raise OutputError(f"{path} {what} lmforge did not write as a {kind.description}; "
                                  "choose another output path (nothing was changed)")
            if not overwrite:
                raise OutputError(f"{path} already holds a {kind.description}; {overwrite_hint} to replace it, "
                                  "or choose another output path")
    ancestor = path.expanduser().resolve().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: {ancestor} is not a writable directory; choose another output path")
    return path
