"""Corpus readers: the built-in `stdlib` corpus, text files, JSON lines and Parquet.

`read_corpus(spec)` picks the reader from the spec: the word "stdlib", a directory, a glob,
or a file whose extension names its format. Every reader yields Documents in a
deterministic order.
"""

from __future__ import annotations

import glob
import gzip
import json
import sysconfig
import tokenize
from itertools import islice
from pathlib import Path
from typing import Iterator

from lmforge.data.document import Document
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


def read_text_files(paths: list[Path], base: Path | None = None) -> Iterator[Document]:
    """One document per UTF-8 text file; files that are not UTF-8 text are an error."""
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{path} is not UTF-8 text; convert it or remove it from the corpus") from None
        doc_id = path.relative_to(base).as_posix() if base else path.as_posix()
        yield Document(text, doc_id, {"source": str(path)})


def read_jsonl(path: Path, text_field: str = "text") -> Iterator[Document]:
    """Documents from a JSON-lines file (optionally .gz): the text in `text_field`, the id in `id` if present."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{line_no}: not valid JSON ({e.msg}); fix or remove that line") from None
            text = record.get(text_field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise DataError(
                    f"{path}:{line_no}: no string field {text_field!r}; set data.text_field to the field holding the text"
                )
            doc_id = str(record.get("id", f"{path.name}:{line_no}"))
            yield Document(text, doc_id, {"source": str(path)})


def read_parquet(path: Path, text_field: str = "text") -> Iterator[Document]:
    """Documents from a Parquet file's `text_field` column, read batch by batch."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError("reading .parquet needs pyarrow: pip install 'lmforge[parquet]'") from None
    pf = pq.ParquetFile(path)
    if text_field not in pf.schema_arrow.names:
        raise DataError(f"{path} has no column {text_field!r} (columns: {', '.join(pf.schema_arrow.names)}); set data.text_field")
    has_id = "id" in pf.schema_arrow.names
    row = 0
    for batch in pf.iter_batches(columns=[text_field] + (["id"] if has_id else [])):
        texts = batch.column(text_field).to_pylist()
        ids = batch.column("id").to_pylist() if has_id else [None] * len(texts)
        for text, doc_id in zip(texts, ids):
            if text is not None:
                yield Document(text, str(doc_id) if doc_id is not None else f"{path.name}:{row}", {"source": str(path)})
            row += 1


BUILTIN_CORPORA = {"stdlib": read_stdlib, "pydoc": read_pydoc}


def _read_file(path: Path, text_field: str, base: Path | None) -> Iterator[Document]:
    name = path.name
    if name.endswith((".jsonl", ".jsonl.gz", ".json.gz", ".ndjson")):
        return read_jsonl(path, text_field)
    if name.endswith(".parquet"):
        return read_parquet(path, text_field)
    return read_text_files([path], base)


def read_corpus(spec: str, text_field: str = "text", shard: int = 0, num_shards: int = 1) -> Iterator[Document]:
    """Documents of a corpus spec: "stdlib" (Python source), "pydoc" (English reference
    text), a directory (every file, recursively), a glob, or a file.

    With `num_shards` > 1 only shard `shard`'s part is read: whole files in turn when there
    are at least as many files as shards, else every num_shards-th document.
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
            yield from _read_file(f, text_field, base)
        return
    docs = (doc for f in files for doc in _read_file(f, text_field, base))
    yield from islice(docs, shard, None, num_shards)
