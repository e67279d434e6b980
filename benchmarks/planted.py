"""Planted near-duplicate sets: real paragraphs, edited copies, and the true pairs by exact Jaccard.

A set is built from paragraphs of one source (python3.11-doc pages for one set, /usr/share/doc for
another, so a setting chosen on one is reported on text it never saw): `originals` paragraphs of
which no two share 30% of their shingles, then `copies` copies of each, every copy with its own
word-edit rate drawn from 1-10% (each word replaced by a word of the set's vocabulary, deleted, or
followed by an inserted word, with equal chances). The true pairs are the pairs of one original's
group whose Jaccard similarity of word 5-gram shingle sets is at least 0.8, computed exactly on
Python sets of word tuples, where words are lmforge's normalised words (`lmforge.data.dedup.words`),
the same words every tool under test is given. Documents of different groups are taken as
distinct (their originals are below 0.3 and edits only move them further apart).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from lmforge.data.dedup import words
from lmforge.data.document import Document

NGRAM = 5
TRUE_JACCARD = 0.8
EDIT_RATES = (0.01, 0.10)


def shingles(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    """The word n-grams of the normalised text; a text of fewer than n words (but some) is one shingle."""
    ws = words(text)
    if len(ws) < n:
        return {tuple(ws)} if ws else set()
    return {tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)}


def jaccard(a: set, b: set) -> float:
    """|a & b| / |a | b| (1 for two empty sets)."""
    return len(a & b) / len(a | b) if a | b else 1.0


@dataclass
class PlantedSet:
    """Documents (shuffled), the true pairs (frozensets of two ids) and the edit rate of every copy."""

    docs: list[Document]
    truth: set[frozenset]
    rates: dict[str, float]


def distinct_originals(paragraphs: list[str], n: int, rng: random.Random, limit: float = 0.3) -> list[str]:
    """Up to `n` paragraphs, in a random order, none sharing `limit` of its shingles (Jaccard) with
    one taken before it (documentation repeats itself: licences, boilerplate)."""
    order = list(dict.fromkeys(paragraphs))
    rng.shuffle(order)
    taken, sets, index = [], [], {}
    for text in order:
        own = shingles(text)
        shared = Counter(j for s in own for j in index.get(s, ()))
        if any(jaccard(own, sets[j]) >= limit for j, count in shared.items() if count >= limit * len(own)):
            continue
        for s in own:
            index.setdefault(s, []).append(len(sets))
        taken.append(text)
        sets.append(own)
        if len(taken) == n:
            break
    return taken


def edited(text: str, rate: float, rng: random.Random, vocab: list[str]) -> str:
    """The text with each word, with probability `rate`, replaced, deleted or followed by an inserted word."""
    out = []
    for word in text.split():
        if rng.random() >= rate:
            out.append(word)
            continue
        kind = rng.randrange(3)
        if kind == 0:
            out.append(rng.choice(vocab))
        elif kind == 2:
            out += [word, rng.choice(vocab)]
    return " ".join(out)


def planted_set(paragraphs: list[str], originals: int, seed: int, copies: int = 2) -> PlantedSet:
    """A planted set from `paragraphs` (see the module docstring); `seed` picks the originals and the edits."""
    rng = random.Random(seed)
    chosen = distinct_originals(paragraphs, originals, rng)
    vocab = sorted({w for text in chosen for w in text.split()})
    docs, rates, truth = [], {}, set()
    for i, text in enumerate(chosen):
        group = [Document(text, f"o{i}")]
        for j in range(copies):
            rate = rng.uniform(*EDIT_RATES)
            group.append(Document(edited(text, rate, rng, vocab), f"c{i}-{j}"))
            rates[group[-1].id] = rate
        sets = [shingles(d.text) for d in group]
        truth |= {frozenset((group[a].id, group[b].id)) for a in range(len(group)) for b in range(a + 1, len(group))
                  if jaccard(sets[a], sets[b]) >= TRUE_JACCARD}
        docs += group
    rng.shuffle(docs)
    return PlantedSet(docs, truth, rates)


def pair_scores(dropped: set[str], truth: set[frozenset]) -> dict:
    """Precision and recall of the dropped documents as near-duplicates: a dropped document is right
    when it belongs to a true pair; a true pair is found when at least one of its two is dropped."""
    partners = {doc_id for pair in truth for doc_id in pair}
    precision = sum(d in partners for d in dropped) / len(dropped) if dropped else 1.0
    recall = sum(bool(pair & dropped) for pair in truth) / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
