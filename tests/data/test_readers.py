import gzip
import io
import json
from collections import Counter

import pytest
from helpers import write_corpus

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
    with pytest.raises(DataError, match="row 1 has no text"):
        list(read_corpus(str(tmp_path / "t.parquet")))
    skipped = Counter()
    assert [d.text for d in read_corpus(str(tmp_path / "t.parquet"), skipped=skipped)] == ["a", "c"]
    assert skipped == {"missing_text_field": 1}
    with pytest.raises(DataError, match="no column 'body'"):
        list(read_corpus(str(tmp_path / "t.parquet"), text_field="body"))
    skipped = Counter()
    assert list(read_corpus(str(tmp_path / "t.parquet"), text_field="body", skipped=skipped)) == []
    assert skipped == {"missing_text_column": 1}


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


def test_counting_mode_skips_and_counts_every_bad_record(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b'{"text": "ok"}\n{broken\n{"body": 1}\n{"text": "fine"}\n')
    (tmp_path / "b.txt").write_bytes(b"\xff\xfe not utf-8")
    (tmp_path / "c.txt").write_text("")
    (tmp_path / "d.jsonl").write_bytes(b'{"text": "before"}\n\xff\xff\n')
    skipped = Counter()
    docs = list(read_corpus(str(tmp_path), skipped=skipped))
    assert [d.text for d in docs] == ["ok", "fine", "before"]
    assert skipped == {"malformed_json": 1, "missing_text_field": 1, "undecodable": 2, "empty_file": 1}


@pytest.mark.parametrize("shards", [1, 2, 3, 6, 7, 40])
def test_every_shard_counts_only_its_own_bad_records(tmp_path, shards):
    lines = []
    for i in range(15):
        lines += [b'{"text": "line %d"}' % i, b"{oops" if i % 3 == 0 else b'{"body": 1}']
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "bad.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "c" / "empty.txt").write_text("")
    counts, ids = Counter(), []
    for shard in range(shards):
        ids += [d.id for d in read_corpus(str(tmp_path / "c"), shard=shard, num_shards=shards, skipped=counts)]
    assert counts == {"malformed_json": 5, "missing_text_field": 10, "empty_file": 1}
    assert sorted(ids) == sorted(d.id for d in read_corpus(str(tmp_path / "c"), skipped=Counter()))


def test_zstd_jsonl(tmp_path):
    zstandard = pytest.importorskip("zstandard")
    (tmp_path / "d.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(b'{"text": "one"}\n{"text": "two"}\n'))
    assert [d.text for d in read_corpus(str(tmp_path / "d.jsonl.zst"))] == ["one", "two"]


def test_warc_html_responses(tmp_path):
    pytest.importorskip("warcio")
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(tmp_path / "crawl.warc.gz", "wb") as f:
        writer = WARCWriter(f, gzip=True)
        pages = [("http://a.example/", "text/html; charset=utf-8", "<p>caf\u00e9</p>".encode()),
                 ("http://b.example/x.png", "image/png", b"\x89PNG"),
                 ("http://c.example/", "text/html; charset=latin-1", "<p>na\u00efve</p>".encode("latin-1"))]
        for url, content_type, body in pages:
            headers = StatusAndHeaders("200 OK", [("Content-Type", content_type)], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=headers))
    docs = list(read_corpus(str(tmp_path / "crawl.warc.gz")))
    assert [d.text for d in docs] == ["<p>caf\u00e9</p>", "<p>na\u00efve</p>"]
    assert docs[0].metadata["url"] == "http://a.example/" and docs[0].metadata["format"] == "html"


def test_sharded_reading_partitions_the_corpus(tmp_path):
    write_corpus(tmp_path / "c", 7)
    whole = [d.id for d in read_corpus(str(tmp_path / "c"))]
    for shards in (3, 10):  # fewer files than shards reads every n-th document
        parts = [[d.id for d in read_corpus(str(tmp_path / "c"), shard=i, num_shards=shards)] for i in range(shards)]
        assert sorted(sum(parts, [])) == sorted(whole)
