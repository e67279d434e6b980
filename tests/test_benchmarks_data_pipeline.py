"""The data pipeline benchmark's own logic: planted near-duplicate sets, their scoring, and the filter
agreement computed from per-document rows."""

from itertools import combinations

from helpers import benchmark_modules

from lmforge.data.document import Document
from lmforge.data.filters import C4Quality
from lmforge.data.readers import read_pydoc

data_pipeline, planted = benchmark_modules("data_pipeline", "planted")


def pydoc_paragraphs():
    return data_pipeline.paragraphs(list(read_pydoc()), by_line=False)


def test_planted_truth_is_every_pair_at_or_above_the_threshold():
    s = planted.planted_set(pydoc_paragraphs(), 40, seed=3)
    assert len(s.docs) == 120 and len({d.id for d in s.docs}) == 120
    sets = {d.id: planted.shingles(d.text) for d in s.docs}
    brute = {frozenset(p) for p in combinations(sets, 2) if planted.jaccard(sets[p[0]], sets[p[1]]) >= 0.8}
    assert s.truth == brute and 0 < len(brute) < 120  # across groups too: no pair the generator missed
    originals = [sets[f"o{i}"] for i in range(40)]
    assert max(planted.jaccard(a, b) for a, b in combinations(originals, 2)) < 0.3
    assert all(0.01 <= r <= 0.10 for r in s.rates.values())
    again = planted.planted_set(pydoc_paragraphs(), 40, seed=3)
    assert [d.text for d in again.docs] == [d.text for d in s.docs]
    assert {d.text for d in planted.planted_set(pydoc_paragraphs(), 40, seed=4).docs} != {d.text for d in s.docs}


def test_shingles_are_normalised_words_and_short_texts_are_one_shingle():
    assert planted.shingles("The cat, the CAT!") == {("the", "cat", "the", "cat")}
    assert planted.shingles("") == set() and planted.jaccard(set(), set()) == 1.0
    assert len(planted.shingles("a b c d e f g")) == 3


def test_pair_scores():
    truth = {frozenset(("a", "b")), frozenset(("c", "d"))}
    assert planted.pair_scores({"b", "x"}, truth) == {"precision": 0.5, "recall": 0.5, "f1": 0.5}
    assert planted.pair_scores(set(), truth)["recall"] == 0.0
    assert planted.pair_scores({"a", "c"}, truth)["f1"] == 1.0


def test_peer_reasons_take_lmforge_names():
    assert data_pipeline.peer_reason("gopher_repetition", "dup_para_frac") == "gopher_dup_para_frac"
    assert data_pipeline.peer_reason("gopher_quality", "gopher_short_doc") == "gopher_short_doc"
    assert data_pipeline.peer_reason("c4_quality", "too_few_sentences") == "c4_too_few_sentences"
    assert data_pipeline.peer_reason("fineweb_quality", None) is None


def row(documents, name, ours, peer):
    return {"documents": documents, "filter": name, "id": "x",
            "ours": dict(zip(("keep", "reason", "text"), ours)), "peer": dict(zip(("keep", "reason", "text"), peer))}


def test_agreement_is_computed_from_the_per_document_rows():
    rows = [
        row("d", "c4_quality", (True, None, "h1"), (True, None, "h1")),
        row("d", "c4_quality", (True, None, "h1"), (True, None, "h2")),  # same decision, other rewritten text
        row("d", "c4_quality", (False, "c4_curly_bracket", None), (False, "c4_too_few_sentences", None)),
        row("d", "c4_quality", (False, "c4_curly_bracket", None), (True, None, "h3")),
    ]
    (table,), classes = data_pipeline.agreement_summary(rows)
    assert table["n"] == 4 and table["same_decision"] == 0.75 and table["same_reason"] == 0.5
    assert table["same_text"] == 0.5 and table["ours_kept"] == 0.5 and table["peer_kept"] == 0.75
    assert {(c["lmforge"], c["datatrove"], c["count"]) for c in classes} == {
        ("keep*", "keep*", 1), ("c4_curly_bracket", "c4_too_few_sentences", 1), ("c4_curly_bracket", "keep", 1)}
    _, classes = data_pipeline.agreement_summary(rows[:1])
    assert [c["count"] for c in classes] == [0]  # a row saying there is none, so the table still renders


def test_recorded_outcomes_read_back_as_rows():
    raw = {"ids": {"d": ["a", "b"]},
           "decisions": {"d": {"c4_quality": [data_pipeline.outcome(True, None, "1f2e") + "\tkeep 1f2e",
                                              "c4_curly_bracket\tkeep 0000"],
                               "gopher_quality": ["keep\tgopher_short_doc", "keep\tkeep"]}}}
    rows = data_pipeline.document_rows(raw)
    assert [(r["filter"], r["id"]) for r in rows] == [("c4_quality", "a"), ("c4_quality", "b"),
                                                      ("gopher_quality", "a"), ("gopher_quality", "b")]
    assert rows[0]["ours"] == {"keep": True, "reason": None, "text": "1f2e"} == rows[0]["peer"]
    assert rows[1]["ours"] == {"keep": False, "reason": "c4_curly_bracket", "text": None}
    assert rows[2]["peer"] == {"keep": False, "reason": "gopher_short_doc", "text": None}
    c4, gopher = data_pipeline.agreement_summary(rows)[0]
    assert c4["same_text"] == 1.0 and gopher["same_text"] is None  # no text to compare where nothing is rewritten


def test_our_decisions_record_reason_and_rewritten_text():
    page = "Menu\n" + "\n".join(f"This is sentence number {i} of the page." for i in range(6))
    docs = [Document(page, "kept"), Document("too short.", "dropped")]
    (keep, reason, text), dropped = data_pipeline.our_decisions("c4_quality", docs)
    assert keep and reason is None
    assert text == data_pipeline.hashlib.blake2b(C4Quality().clean(page).text.encode(), digest_size=4).hexdigest()
    assert dropped == [False, "c4_too_few_sentences", None]
