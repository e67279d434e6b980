import gzip
import json

import pytest

from lmforge.data.readers import TEST_DIRS, read_corpus, stdlib_files, stdlib_root
from lmforge.errors import DataError


def test_stdlib_corpus_is_sorted_code_without_tests_or_site_packages():
    files = stdlib_files()
    rels = [f.relative_to(stdlib_root()).as_posix() for f in files]
    assert len(files) > 300 and rels == sorted(rels)
    assert "os.py" in rels and "json/decoder.py" in rels
    for rel in rels:
        parts = rel.split("/")[:-1]
        assert "site-packages" not in parts and not TEST_DIRS.intersection(parts)
    doc = next(read_corpus("stdlib"))
    assert doc.id == rels[0] and doc.metadata["domain"] == "code"


def test_directory_glob_and_single_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "sub" / "b.md").write_text("second")
    (tmp_path / ".hidden").write_text("skipped")
    assert [(d.id, d.text) for d in read_corpus(str(tmp_path))] == [("a.txt", "first"), ("sub/b.md", "second")]
    assert [d.text for d in read_corpus(str(tmp_path / "**" / "*.md"))] == ["second"]
    assert [d.text for d in read_corpus(str(tmp_path / "a.txt"))] == ["first"]


def test_jsonl_plain_and_gzip_with_custom_field(tmp_path):
    rows = [{"content": "one", "id": "x1"}, {"content": "two"}]
    lines = "\n".join(json.dumps(r) for r in rows) + "\n\n"
    (tmp_path / "d.jsonl").write_text(lines)
    with gzip.open(tmp_path / "d2.jsonl.gz", "wt") as f:
        f.write(lines)
    for name in ("d.jsonl", "d2.jsonl.gz"):
        docs = list(read_corpus(str(tmp_path / name), text_field="content"))
        assert [d.text for d in docs] == ["one", "two"] and docs[0].id == "x1" and docs[1].id == f"{name}:2"


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["a", None, "c"]}), tmp_path / "t.parquet")
    assert [d.text for d in read_corpus(str(tmp_path / "t.parquet"))] == ["a", "c"]
    with pytest.raises(DataError, match="no column 'body'"):
        list(read_corpus(str(tmp_path / "t.parquet"), text_field="body"))


@pytest.mark.parametrize("content, message", [
    ('{"text": "ok"}\n{broken\n', "d.jsonl:2: not valid JSON"),
    ('{"body": "x"}\n', "no string field 'text'"),
])
def test_bad_jsonl_names_the_line(tmp_path, content, message):
    (tmp_path / "d.jsonl").write_text(content)
    with pytest.raises(DataError, match=message):
        list(read_corpus(str(tmp_path / "d.jsonl")))


def test_missing_corpus_and_binary_file(tmp_path):
    with pytest.raises(DataError, match="matches no files"):
        list(read_corpus(str(tmp_path / "nothing*")))
    (tmp_path / "bin.dat").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(DataError, match="not UTF-8"):
        list(read_corpus(str(tmp_path / "bin.dat")))
