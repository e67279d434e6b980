"""Corpus readers: the built-in `stdlib` corpus, text files, JSON lines, Parquet and WARC.

`read_corpus(spec)` picks the reader from the spec: the word "stdlib", a directory, a glob,
or a file whose extension names its format. Every reader yields Documents in a
deterministic order.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import sysconfig
import tokenize
from collections import Counter
from itertools import islice
from pathlib import Path
from typing import Any, Iterator

from lmforge.data.document import Document
from lmforge.data.websample import read_websample
from lmforge.errors import DataError

TEST_DIRS = frozenset({"test", "tests", "idle_test"})


def stdlib_root() -> Path:
    """Directory of the running interpreter's pure-Python standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files() -> list[Path]:
    """Every `.py` file of the standard library except site-packages and test directories, sorted."""
    root = stdlib_root()
    files = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts[:-1]
        if "site-packages" in parts or "dist-packages" in parts or TEST_DIRS.intersection(parts):
            continue
        files.append(path)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def read_stdlib() -> Iterator[Document]:
    """The built-in corpus: the standard library's source, real text present on every machine."""
    root = stdlib_root()
    for path in stdlib_files():
        with tokenize.open(path) as f:  # honours PEP 263 encoding declarations
            text = f.read()
        yield Document(text, path.relative_to(root).as_posix(), {"domain": "code", "source": "stdlib"})


def read_pydoc() -> Iterator[Document]:
    """The built-in English corpus: the Python language reference topics bundled with the
    standard library for `help()` (`pydoc_data.topics`), one document per topic."""
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield Document(topics[name], f"pydoc/{name}", {"domain": "prose", "source": "pydoc"})


def english_passage(min_chars: int) -> str:
    """Consecutive prose paragraphs of the pydoc topics (no code or grammar blocks) until `min_chars`."""
    paragraphs: list[str] = []
    for doc in read_pydoc():
        for para in doc.text.split("\n\n"):
            lines = para.splitlines()
            if len(lines) >= 3 and not any(line.startswith((" ", "*", "=")) for line in lines) and para.rstrip().endswith("."):
                paragraphs.append(" ".join(lines))
                if sum(len(p) + 2 for p in paragraphs) >= min_chars:
                    return "\n\n".join(paragraphs)
    return "\n\n".join(paragraphs)


def _skip(skipped: Counter | None, reason: str, message: str) -> None:
    """Count a bad record under `reason` when counting, else stop with `message`."""
    if skipped is None:
        raise DataError(message)
    skipped[reason] += 1


def read_text_files(paths: list[Path], base: Path | None = None, skipped: Counter | None = None) -> Iterator[Document]:
    """One document per UTF-8 text file; a file that is not UTF-8 is an error (or counted as
    "undecodable" and skipped, when counting)."""
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            _skip(skipped, "undecodable", f"{path} is not UTF-8 text; convert it or remove it from the corpus")
            continue
        doc_id = path.relative_to(base).as_posix() if base else path.as_posix()
        yield Document(text, doc_id, {"source": str(path)})


def _open_binary(path: Path):
    """A byte stream of a file, decompressing .gz and .zst."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.name.endswith(".zst"):
        try:
            import zstandard
        except ImportError:
            raise DataError(f"reading {path} needs zstandard: pip install 'lmforge[web]'") from None
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True))
    return open(path, "rb")


def json_records(path: str | Path, expected: str) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) of each non-blank line of a JSON-lines file; an unreadable file or a
    line that is not JSON is an error naming the place and `expected` (what each line should hold)."""
    path = Path(path).expanduser()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {path}: {getattr(err, 'strerror', None) or err}; give a .jsonl of {expected}") from None
    for line_no, line in enumerate(lines, 1):
        if line.strip():
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{line_no}: not JSON ({err.msg}); each line should be {expected}") from None


def read_jsonl(path: Path, text_field: str = "text", skipped: Counter | None = None) -> Iterator[Document]:
    """Documents from a JSON-lines file (optionally .gz or .zst): the text in `text_field`, the id
    in `id` if present. Undecodable lines, malformed lines and lines without the text field are
    errors, or counted and skipped when counting."""
    with _open_binary(path) as f:
        for line_no, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                _skip(skipped, "undecodable", f"{path}:{line_no}: not UTF-8; fix or remove that line")
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                _skip(skipped, "malformed_json", f"{path}:{line_no}: not valid JSON ({e.msg}); fix or remove that line")
                continue
            text = record.get(text_field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                _skip(skipped, "missing_text_field",
                      f"{path}:{line_no}: no string field {text_field!r}; set data.text_field to the field holding the text")
                continue
            doc_id = str(record.get("id", f"{path.name}:{line_no}"))
            yield Document(text, doc_id, {"source": str(path)})


def read_parquet(path: Path, text_field: str = "text", skipped: Counter | None = None) -> Iterator[Document]:
    """Documents from a Parquet file's `text_field` column, read batch by batch. A file without
    that column is an error (or counted as "missing_text_column", when counting)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError("reading .parquet needs pyarrow: pip install 'lmforge[parquet]'") from None
    pf = pq.ParquetFile(path)
    if text_field not in pf.schema_arrow.names:
        _skip(skipped, "missing_text_column",
              f"{path} has no column {text_field!r} (columns: {', '.join(pf.schema_arrow.names)}); set data.text_field")
        return
    has_id = "id" in pf.schema_arrow.names
    row = 0
    for batch in pf.iter_batches(columns=[text_field] + (["id"] if has_id else [])):
        texts = batch.column(text_field).to_pylist()
        ids = batch.column("id").to_pylist() if has_id else [None] * len(texts)
        for text, doc_id in zip(texts, ids):
            if isinstance(text, str):
                yield Document(text, str(doc_id) if doc_id is not None else f"{path.name}:{row}", {"source": str(path)})
            else:
                _skip(skipped, "missing_text_field", f"{path}: row {row} has no text in {text_field!r}")
            row += 1


def read_warc(path: Path, skipped: Counter | None = None) -> Iterator[Document]:
    """HTML responses of a WARC file (optionally .gz), decoded by their declared charset (else
    UTF-8, undecodable bytes replaced and the document counted as "undecodable_bytes");
    metadata url and format "html" for the extraction step."""
    try:
        from warcio.archiveiterator import ArchiveIterator
    except ImportError:
        raise DataError(f"reading {path} needs warcio: pip install 'lmforge[web]'") from None
    with open(path, "rb") as f:
        for record in ArchiveIterator(f):
            if record.rec_type != "response" or record.http_headers is None:
                continue
            content_type = record.http_headers.get_header("Content-Type") or ""
            if "html" not in content_type:
                continue
            charset = content_type.partition("charset=")[2].split(";")[0].strip() or "utf-8"
            body = record.content_stream().read()
            try:
                text = body.decode(charset)
            except (UnicodeDecodeError, LookupError):
                text = body.decode("utf-8", errors="replace")
                if skipped is not None:
                    skipped["undecodable_bytes"] += 1
            url = record.rec_headers.get_header("WARC-Target-URI") or ""
            doc_id = record.rec_headers.get_header("WARC-Record-ID") or f"{path.name}:{url}"
            yield Document(text, doc_id, {"source": str(path), "url": url, "format": "html"})


def read_reasoning() -> Iterator[Document]:
    """Worked solutions of the synthetic reasoning tasks' train splits (lmforge.eval.tasks)."""
    from lmforge.eval.tasks import read_reasoning as documents

    return documents()


def read_conversations() -> Iterator[Document]:
    """Synthetic conversations of the multi-turn probe, from training seeds (lmforge.eval.multiturn)."""
    from lmforge.eval.multiturn import read_conversations as documents

    return documents()


BUILTIN_CORPORA = {"stdlib": read_stdlib, "pydoc": read_pydoc, "websample": read_websample, "reasoning": read_reasoning,
                   "conversations": read_conversations}
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".ndjson", ".jsonl.zst")


def _read_file(path: Path, text_field: str, base: Path | None, skipped: Counter | None) -> Iterator[Document]:
    if skipped is not None and path.stat().st_size == 0:
        skipped["empty_file"] += 1
        return iter(())
    name = path.name
    if name.endswith(JSONL_SUFFIXES):
        return read_jsonl(path, text_field, skipped)
    if name.endswith(".parquet"):
        return read_parquet(path, text_field, skipped)
    if name.endswith((".warc", ".warc.gz")):
        return read_warc(path, skipped)
    return read_text_files([path], base, skipped)


def corpus_paths(spec: str) -> list[Path]:
    """The files or directories a corpus spec reads (a glob's fixed leading directory), for
    refusing an output that would overwrite its own input. Built-in corpora read none."""
    if spec in BUILTIN_CORPORA:
        return []
    path = Path(spec).expanduser()
    if path.exists() or not glob.has_magic(spec):
        return [path]
    fixed = []
    for part in path.parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return [Path(*fixed) if fixed else Path(".")]


def read_corpus(
    spec: str, text_field: str = "text", shard: int = 0, num_shards: int = 1, skipped: Counter | None = None
) -> Iterator[Document]:
    """Documents of a corpus spec: "stdlib" (Python source), "pydoc" (English reference
    text), "websample" (generated web pages around pydoc prose), "reasoning" (worked solutions of the synthetic
    reasoning tasks), "conversations" (the multi-turn probe's conversations, from training seeds), a directory (every file, recursively), a glob, or a file.

    With `num_shards` > 1 only shard `shard`'s part is read: whole files in turn when there
    are at least as many files as shards, else every num_shards-th document. With a `skipped`
    counter, bad records are counted there by reason instead of stopping the read, each by
    exactly one shard, so the shards' counts add up to the corpus's.
    """
    if not 0 <= shard < num_shards:
        raise DataError(f"shard {shard} is not in 0..{num_shards - 1}")
    if spec in BUILTIN_CORPORA:
        yield from islice(BUILTIN_CORPORA[spec](), shard, None, num_shards)
        return
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        base = path
    elif path.is_file():
        files, base = [path], path.parent
    else:
        files, base = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file()), None
    if not files:
        raise DataError(
            f"corpus {spec!r} matches no files; give 'stdlib', 'pydoc', a directory, a glob or a .txt/.jsonl/.parquet file"
        )
    if len(files) >= num_shards:
        for f in files[shard::num_shards]:
            yield from _read_file(f, text_field, base, skipped)
        return
    yield from _every_nth(files, text_field, base, shard, num_shards, skipped)


def _every_nth(
    files: list[Path], text_field: str, base: Path | None, shard: int, num_shards: int, skipped: Counter | None
) -> Iterator[Document]:
    """Every num_shards-th document of the files, from the `shard`-th on.

    Every shard reads all the records, so a bad record is counted only by the shard of the
    document after it (the shard next in turn, for bad records after the last document).
    """
    local = Counter()  # the bad records since the previous document
    docs = (doc for f in files for doc in _read_file(f, text_field, base, None if skipped is None else local))
    counts = Counter() if skipped is None else skipped
    position = 0
    for doc in docs:
        if position % num_shards == shard:
            counts.update(local)
            yield doc
        local.clear()
        position += 1
    if position % num_shards == shard:
        counts.update(local)
