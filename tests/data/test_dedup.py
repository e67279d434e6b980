from __future__ import annotations

import json
import random
import subprocess
import sys
from functools import lru_cache, partial
from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.data import dedup
from lmforge.data.decontaminate import Decontaminate, read_eval_texts
from lmforge.data.dedup import (
    ExactDedup,
    MinHashConfig,
    MinHashDedup,
    band_keys,
    candidate_pairs,
    cluster_roots,
    concat_sets,
    estimated_jaccard,
    exact_jaccard,
    minhash_signatures,
    near_duplicates,
    ngram_hashes,
    ngram_hashes_batch,
    normalize,
    shingle_sets,
    words,
)
from lmforge.data.document import Document
from lmforge.data.readers import read_pydoc
from lmforge.data.steps import StepStats, drop_ids
from lmforge.errors import ConfigError, DataError


def run(step, docs):
    stats = StepStats()
    return list(step(iter(docs), stats)), stats


def shingles(text, n=5):
    ws = words(text)
    return {tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)}


def jaccard(a, b):
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


@lru_cache(maxsize=1)
def paragraphs():
    """English pydoc paragraphs of 20+ words, each sharing under 30% of its 5-gram shingles with
    the ones before it, so any two have true Jaccard below 0.3."""
    seen, kept = set(), []
    for doc in read_pydoc():
        for para in doc.text.split("\n\n"):
            sh = shingles(para)
            if len(words(para)) >= 20 and len(sh & seen) < 0.3 * len(sh):
                kept.append(" ".join(para.split()))
                seen |= sh
    return kept


def edit(text, rate, rng, vocab):
    """Each word replaced by a random corpus word, or deleted, with probability `rate`."""
    out = []
    for w in text.split():
        r = rng.random()
        if r < rate / 2:
            out.append(rng.choice(vocab))
        elif r >= rate:
            out.append(w)
    return " ".join(out)


@lru_cache(maxsize=1)
def planted():
    """300 originals of 80+ words, light copies (true Jaccard >= 0.8) and heavy copies (< 0.5), shuffled.
    Returns (docs, near pairs of ids, far pairs of ids, original ids)."""
    rng = random.Random(0)
    originals, doc = [], []
    for para in paragraphs():  # consecutive paragraphs up to 80+ words a document
        doc.append(para)
        if len(words(" ".join(doc))) >= 80:
            originals.append("\n\n".join(doc))
            doc = []
    originals = originals[:300]
    vocab = sorted({w for p in originals for w in p.split()})
    docs = [Document(p, f"orig{i}") for i, p in enumerate(originals)]
    near, far = [], []
    for i, p in enumerate(originals[:260]):
        light = i < 200
        copy = edit(p, rng.uniform(0.005, 0.025) if light else 0.25, rng, vocab)
        j = jaccard(p, copy)
        if (light and j >= 0.8) or (not light and j < 0.5):
            docs.append(Document(copy, f"copy{i}"))
            (near if light else far).append((f"orig{i}", f"copy{i}"))
    rng.shuffle(docs)
    return docs, near, far, {d.id for d in docs if d.id.startswith("orig")}


def test_normalisation_ignores_case_width_punctuation_and_spacing():
    assert normalize("  Hello,\tWORLD!  Don't\n\n stop_now ") == "hello world dont stopnow"
    assert normalize("ＡＢＣ １２３") == "abc 123"  # NFKC folds full-width forms
    assert normalize("...  !!") == "" and words("") == []


def test_ngram_windows_stay_inside_each_text():
    h, offsets = ngram_hashes_batch(["a b c d e f", "", "b c d e f g", "x y"], 5)
    assert offsets.tolist() == [0, 2, 2, 4, 5]
    assert h[1] == h[2] and len(set(h.tolist())) == 4
    assert ngram_hashes("X, Y!", 5)[0] == h[4] != ngram_hashes("y x", 5)[0]  # a short text is one n-gram; order counts


def test_signatures_match_the_formula_computed_naively(monkeypatch):
    monkeypatch.setattr(dedup, "_CHUNK", 40)  # many blocks, and documents larger than a block
    p = 2**31 - 1
    config = MinHashConfig(bands=4, rows=3, seed=7)
    a, b = dedup._permutations(config.num_perm, config.seed)
    texts = [paragraphs()[3], "", "two words", paragraphs()[4], "", ""]
    sig = minhash_signatures(texts, config)
    for text, row in zip(texts, sig.tolist()):
        x = [int(h) % p for h in ngram_hashes(text, 5)]
        assert row == [min(((int(ai) * xi + int(bi)) % p for xi in x), default=0xFFFFFFFF) for ai, bi in zip(a, b)]
    x, a, b = (np.array(v, np.uint64) for v in ([0, 1, p - 2, p - 1], [1, 2, p - 1], [0, 1, p - 1]))  # extremes
    out = dedup._universal_hash(x, a, b, np.empty((4, 3), np.uint64), np.empty((4, 3), np.uint64))
    assert out.tolist() == [[(int(ai) * int(xi) + int(bi)) % p for ai, bi in zip(a, b)] for xi in x]


def test_exact_dedup_keeps_first_of_identical_after_normalisation():
    texts = ["Hello, World!", "a b", "hello   world", "HELLO WORLD.", "A, B"]
    docs = [Document(t, str(i)) for i, t in enumerate(texts)]
    out, stats = run(ExactDedup(), docs)
    assert [d.id for d in out] == ["0", "1"]
    assert stats.dropped["exact_duplicate"] == 3 and stats.docs_out == 2


def test_minhash_finds_planted_near_duplicates():
    docs, near, far, originals = planted()
    assert len(near) >= 120 and len(far) >= 40
    index = {d.id: i for i, d in enumerate(docs)}
    roots = cluster_roots(len(docs), candidate_pairs(band_keys(minhash_signatures([d.text for d in docs]))))
    predicted = {(a, b) for a, b in combinations(sorted(index), 2) if roots[index[a]] == roots[index[b]]}
    truth = {tuple(sorted(p)) for p in near}
    recall = len(predicted & truth) / len(truth)
    precision = len(predicted & truth) / len(predicted)
    assert recall >= 0.90 and precision >= 0.95, (recall, precision)
    assert len({roots[index[o]] for o in originals}) == len(originals)  # unrelated documents never merge

    out, stats = run(MinHashDedup(threshold=0.0), docs)  # unverified: exactly the LSH clusters
    assert stats.dropped["near_duplicate"] == len(docs) - len(out) == len(docs) - len(set(roots.tolist()))
    assert stats.changed["duplicate_clusters"] == len({roots[index[b]] for a, b in predicted})
    assert [d.id for d in out] == [d.id for i, d in enumerate(docs) if roots[i] == i]  # first of each, in order


def test_verification_cuts_candidates_below_threshold():
    sig = minhash_signatures([d.text for d in planted()[0]])
    _, clusters_all = near_duplicates(band_keys(sig))
    drop, clusters_strict = near_duplicates(band_keys(sig), partial(estimated_jaccard, signatures=sig), threshold=0.9)
    assert 0 < clusters_strict < clusters_all
    estimated = (sig[drop][:, None] == sig[None]).mean(axis=2)
    estimated[np.arange(len(drop)), drop] = 0
    assert (estimated.max(axis=1) >= 0.9).all()  # every dropped document has a twin above the threshold


def test_exact_jaccard_matches_python_sets_in_float64():
    texts = [d.text for d in planted()[0][:40]] + ["", "one two", "one two", "a b c d e f", ""]
    sets = shingle_sets(texts, 5)
    pairs = np.array([(i, j) for i in range(len(texts)) for j in range(i + 1, len(texts))])
    naive = []
    for i, j in pairs.tolist():
        a, b = (shingles(t) if len(words(t)) >= 5 else ({tuple(words(t))} if words(t) else set()) for t in (texts[i], texts[j]))
        naive.append(len(a & b) / len(a | b) if a | b else 1.0)
    assert exact_jaccard(pairs, sets).tolist() == naive  # exact in float64, no estimate
    for i, t in enumerate(texts):  # each text's set: its n-gram hashes, sorted, without repeats
        own = sets[0][sets[1][i] : sets[1][i + 1]]
        assert own.tolist() == np.unique(ngram_hashes(t, 5)).tolist()
    halves = concat_sets([shingle_sets(texts[:7], 5), shingle_sets([], 5), shingle_sets(texts[7:], 5)])
    assert all((x == y).all() for x, y in zip(halves, sets))


def test_exact_verification_merges_exactly_the_candidates_at_the_threshold():
    docs, near, far, _ = planted()
    texts = [d.text for d in docs]
    keys, sets = band_keys(minhash_signatures(texts)), shingle_sets(texts, 5)
    candidates = candidate_pairs(keys)
    kept = {tuple(p) for p in candidates.tolist() if jaccard(texts[p[0]], texts[p[1]]) >= 0.8}
    drop, clusters = near_duplicates(keys, partial(exact_jaccard, sets=sets), threshold=0.8)
    roots = cluster_roots(len(docs), np.array(sorted(kept)).reshape(-1, 2))
    assert drop.tolist() == np.flatnonzero(roots != np.arange(len(docs))).tolist() and clusters > 0
    index = {d.id: i for i, d in enumerate(docs)}
    assert all(roots[index[a]] != roots[index[b]] for a, b in far)  # heavy copies stay apart


def test_default_step_verifies_exactly_and_finds_the_planted_pairs():
    docs, near, far, _ = planted()
    out, stats = run(MinHashDedup(), docs)
    kept = {d.id for d in out}
    found = sum(a not in kept or b not in kept for a, b in near)
    assert found / len(near) >= 0.95
    assert all(a in kept and b in kept for a, b in far)
    assert MinHashDedup().verify == "exact" and MinHashDedup().threshold == 0.8


def test_sharded_phases_give_the_single_stream_survivors():
    docs = planted()[0]
    shards = [docs[i::3] for i in range(3)]  # three workers; stream order is shard by shard
    stream = [d for shard in shards for d in shard]
    step = MinHashDedup(threshold=0.5, verify="estimate", batch_size=100)
    phase_stats = StepStats()
    drop = step.resolve([step.summarize(shard) for shard in shards], phase_stats)
    phased = [d.id for shard in shards for d in drop_ids(shard, drop, step.reason, phase_stats)]
    out, stats = run(step, stream)
    assert phased == [d.id for d in out]
    assert stats.dropped == phase_stats.dropped and stats.dropped["near_duplicate"] > 0
    assert stats.changed["duplicate_clusters"] == phase_stats.changed["duplicate_clusters"] > 0
    # and the phases are the functions a driver can call directly
    config = MinHashConfig(threshold=0.5)
    sigs = [minhash_signatures([d.text for d in shard], config) for shard in shards]
    verify = partial(estimated_jaccard, signatures=np.concatenate(sigs))
    direct, _ = near_duplicates(np.concatenate([band_keys(s, config) for s in sigs]), verify, 0.5)
    assert {stream[i].id for i in direct} == drop


@pytest.mark.parametrize("step", [ExactDedup(), MinHashDedup(threshold=0.5), MinHashDedup(threshold=0.5, verify="estimate"),
                                  MinHashDedup(threshold=0.0)], ids=["exact", "minhash-exact", "minhash-estimate", "minhash"])
def test_empty_shards_resolve_like_absent_ones(step):
    docs = planted()[0]
    expected = step.resolve([step.summarize(docs[:20]), step.summarize(docs[20:])], StepStats())
    with_empty = [step.summarize([]), step.summarize(docs[:20]), step.summarize([]), step.summarize(docs[20:])]
    assert step.resolve(with_empty, StepStats()) == expected and expected
    assert step.resolve([step.summarize([]), step.summarize([])], StepStats()) == set()


def test_chained_clusters_keep_exactly_one():
    assert cluster_roots(6, np.array([[1, 2], [0, 1], [4, 5]])).tolist() == [0, 0, 0, 3, 4, 4]
    a = paragraphs()[0]
    rng, vocab = random.Random(1), a.split()
    b = edit(a, 0.02, rng, vocab)
    c = edit(b, 0.02, rng, vocab)
    docs = [Document(t, i) for t, i in [(c, "c"), (paragraphs()[1], "x"), (b, "b"), (a, "a")]]
    out, stats = run(MinHashDedup(threshold=0.0), docs)
    assert [d.id for d in out] == ["c", "x"]
    assert stats.dropped["near_duplicate"] == 2 and stats.changed["duplicate_clusters"] == 1


def test_signatures_are_stable_across_calls_and_processes():
    text = paragraphs()[5]
    sig = minhash_signatures([text, "short one"])
    assert (sig == minhash_signatures([text, "short one"])).all()
    assert (sig[0] == minhash_signatures(["x", text])[1]).all()  # independent of the batch
    code = ("import sys; from lmforge.data.dedup import minhash_signatures as m; "
            "print(m([sys.stdin.read()])[0].tolist())")
    other = subprocess.run([sys.executable, "-c", code], input=text, capture_output=True, text=True, check=True)
    assert json.loads(other.stdout) == sig[0].tolist()
    # pinned: signatures stored by one machine or version stay comparable with another's
    assert minhash_signatures(["the quick brown fox jumps over the lazy dog"])[0, :3].tolist() == PINNED
    assert (minhash_signatures([text], MinHashConfig(seed=1)) != sig[0]).mean() > 0.9


PINNED = [143672422, 4799091, 599132082]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(list("ab c.,!\n\t_É")), max_size=30), max_size=12))
def test_empty_and_short_documents(texts):
    docs = [Document(t, str(i)) for i, t in enumerate(texts)]
    distinct = list(dict.fromkeys(normalize(t) for t in texts))
    exact = [normalize(d.text) for d in run(ExactDedup(), docs)[0]]
    assert exact == distinct
    near = [normalize(d.text) for d in run(MinHashDedup(batch_size=5), docs)[0]]
    assert len(set(near)) == len(near) and set(near) <= set(distinct)  # identical texts always merge
    for t in texts:
        n_words = len(words(t))
        assert len(ngram_hashes(t, 5)) == (n_words - 4 if n_words >= 5 else min(n_words, 1))
    assert len(run(Decontaminate(texts=[*texts, ""]), docs)[0]) <= len(docs)


def test_decontamination_drops_13_gram_overlap_only():
    eval_text = paragraphs()[10]
    ws = words(eval_text)
    filler = paragraphs()[11]
    doc13 = f"{filler} {' '.join(ws[3:16]).upper()}! {filler}"
    doc12 = f"{filler} {' '.join(ws[3:15])} {filler}"
    short = "The capital of France."
    docs = [Document(t, i) for t, i in [(doc13, "13"), (doc12, "12"), ("the capital, of france", "short"),
                                         ("The capital of France is Paris.", "longer"), ("", "empty")]]
    out, stats = run(Decontaminate(texts=[eval_text, short, ""]), docs)
    assert [d.id for d in out] == ["12", "longer", "empty"]
    assert stats.dropped["contaminated"] == 2
    assert [d.id for d in run(Decontaminate(texts=[eval_text], n=12), docs)[0]] == ["short", "longer", "empty"]


def test_decontamination_reads_files_and_directories(tmp_path):
    eval_text = paragraphs()[10]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text(eval_text)
    (tmp_path / "b.jsonl").write_text(json.dumps({"question": "What is the capital of France?"}) + "\n")
    (tmp_path / "ignored.csv").write_text(paragraphs()[12])
    assert list(read_eval_texts(tmp_path, "question")) == ["What is the capital of France?", eval_text]
    step = Decontaminate(path=str(tmp_path), text_field="question")
    docs = [Document(eval_text, "a"), Document("what is the capital of france", "b"), Document(paragraphs()[12], "c")]
    assert [d.id for d in run(step, docs)[0]] == ["c"]
    with pytest.raises(DataError, match="does not exist"):
        Decontaminate(path=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .txt or .jsonl"):
        Decontaminate(path=str(tmp_path / "empty"))


def test_bad_parameters_are_config_errors():
    with pytest.raises(ConfigError, match="bands"):
        MinHashDedup(bands=0)
    with pytest.raises(ConfigError, match="threshold"):
        MinHashConfig(threshold=1.5)
    with pytest.raises(ConfigError, match="verify"):
        MinHashDedup(verify="approximate")
    with pytest.raises(ConfigError, match="n-gram"):
        Decontaminate(texts=["x"], n=0)
