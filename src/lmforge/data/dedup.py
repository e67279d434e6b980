"""Exact and near-duplicate removal: normalised-text hashing and MinHash-LSH.

Normalisation (shared with decontamination): Unicode NFKC, lowercase, every character that is
neither a letter, digit nor whitespace deleted (punctuation, symbols and underscore, so "don't"
becomes "dont"), whitespace runs collapsed to one space. Words are the space-separated tokens of
the normalised text, each hashed once to 64 bits with BLAKE2b (stable across processes and
machines, unlike Python's `hash()`); a word n-gram's hash combines its n word hashes with
vectorised 64-bit arithmetic, so no n-gram string is ever built.

Exact dedup keeps the first document of each normalised-text hash (128-bit BLAKE2b).

Near dedup is MinHash (Broder, "On the resemblance and containment of documents", 1997) with
locality-sensitive hashing over bands (Leskovec, Rajaraman & Ullman, "Mining of Massive Datasets",
ch. 3): a document's shingles are its word n-grams; each of `bands * rows` universal hash
functions (a*x + b) mod p, p = 2^31 - 1, keeps its minimum over the shingles, and two signatures
agree in one position with probability equal to the shingle sets' Jaccard similarity s. Two
documents become a candidate pair when all `rows` values of some band agree, which happens with
probability 1 - (1 - s^rows)^bands: for the default 16 x 6, 0.22 at s = 0.5, 0.87 at 0.7, 0.992
at 0.8, 0.9995 at 0.85. The bands are loose on purpose: verification removes the candidates below
the threshold, so the bands need only catch the pairs above it.

The 31-bit Mersenne prime keeps the arithmetic exact in uint64 (a, x, b < p, so a*x + b < p^2 < 2^62),
reduces mod p with a shift, a mask and one subtraction instead of a division, and halves signature
memory against 64-bit values. Shingle hashes are reduced mod p first: two documents of 10^3
shingles each share a residue between distinct shingles with probability about 10^6 / p = 5e-4,
and then only one shingle's worth, far below the estimator's own spread (1/sqrt(bands * rows)).

Candidates are then verified: by default against the true Jaccard of their shingle sets
(`exact_jaccard`), else against the signatures' estimate (`estimated_jaccard`).

For a sharded run the work splits into phases: workers call `minhash_signatures` and `band_keys`
(and `shingle_sets` to verify exactly) on their shard; the driver concatenates them in stream
order and calls `near_duplicates`;
workers then apply `DropIds` with the ids it returns. `MinHashDedup` does all of it in one stream.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial

import numpy as np

from lmforge.data.document import Document
from lmforge.data.steps import GlobalStep, StepStats
from lmforge.errors import ConfigError

MERSENNE31 = np.uint64((1 << 31) - 1)
EMPTY = np.uint32(0xFFFFFFFF)  # minimum over no shingles; above every value mod 2^31 - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_NOT_WORD = re.compile(r"[^\w\s]|_")
VERIFY = ("exact", "estimate")
_CHUNK = 8192  # shingles per [shingles, permutations] block: a few MB, cache-sized


def words(text: str) -> list[str]:
    """The words of the normalised text: NFKC, lowercase, punctuation and symbols deleted, split
    on whitespace."""
    return _NOT_WORD.sub("", unicodedata.normalize("NFKC", text).lower()).split()


def normalize(text: str) -> str:
    """The normalised text, words joined by single spaces: texts that differ only in case, width
    forms, punctuation or spacing normalise to the same string."""
    return " ".join(words(text))


def text_hash(text: str) -> bytes:
    """128-bit BLAKE2b of the normalised text: the key of exact dedup."""
    return hashlib.blake2b(normalize(text).encode(), digest_size=16).digest()


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser: every input bit affects every output bit."""
    h = h ^ (h >> np.uint64(33))
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


def ngram_hashes_batch(texts: Sequence[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every word n-gram of each normalised text, all texts in one array.

    Returns (hashes uint64, offsets int64 of length len(texts) + 1): text i's n-grams are
    hashes[offsets[i]:offsets[i + 1]], in text order. A text of fewer than n words (but at least
    one) has one n-gram, the hash of all its words; a text without words has none. Each distinct
    word of the batch is hashed once; n-gram hashes chain the word hashes, h <- fmix64(h * K + w).
    """
    word_lists = [words(t) for t in texts]
    lengths = np.fromiter(map(len, word_lists), np.int64, len(word_lists))
    counts = np.where(lengths >= n, lengths - n + 1, lengths > 0)
    offsets = np.zeros(len(texts) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    if offsets[-1] == 0:
        return np.zeros(0, np.uint64), offsets

    flat = list(itertools.chain.from_iterable(word_lists))
    word_hash = {w: int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
                 for w in dict.fromkeys(flat)}
    hashes = np.fromiter(map(word_hash.__getitem__, flat), np.uint64, len(flat))

    doc = np.repeat(np.arange(len(texts)), counts)
    start = (np.cumsum(lengths) - lengths)[doc] + np.arange(offsets[-1]) - offsets[doc]
    width = np.minimum(lengths, n)[doc]
    h = hashes[start]
    for j in range(1, n):
        # a short text's window ends before j: its read is clipped into bounds and then discarded
        nxt = _fmix64(h * _GOLDEN + hashes[np.minimum(start + j, len(hashes) - 1)])
        h = np.where(width > j, nxt, h)
    return h, offsets


def ngram_hashes(text: str, n: int) -> np.ndarray:
    """64-bit hashes of the word n-grams of one normalised text (see `ngram_hashes_batch`)."""
    return ngram_hashes_batch([text], n)[0]


@dataclass(frozen=True)
class MinHashConfig:
    """MinHash-LSH parameters: `bands` x `rows` permutations, word `ngram` shingles, the `seed`
    of the hash functions, and the Jaccard a candidate pair must reach (`threshold`, 0 keeps
    every candidate) before it merges clusters."""

    bands: int = 16
    rows: int = 6
    ngram: int = 5
    seed: int = 0
    threshold: float = 0.0

    def __post_init__(self):
        for key in ("bands", "rows", "ngram"):
            if getattr(self, key) < 1:
                raise ConfigError(f"minhash {key} must be at least 1, got {getattr(self, key)}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"minhash threshold is an estimated Jaccard in [0, 1], got {self.threshold}")

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows


@lru_cache(maxsize=16)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients a in [1, p), b in [0, p) of the universal hashes, drawn from BLAKE2b so they
    never depend on a random generator's version."""
    draws = [int.from_bytes(hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=16).digest(), "little")
             for i in range(num_perm)]
    p = int(MERSENNE31)
    a = np.array([1 + d % (p - 1) for d in draws], np.uint64)
    b = np.array([(d >> 64) % p for d in draws], np.uint64)
    return a, b


def _universal_hash(x: np.ndarray, a: np.ndarray, b: np.ndarray, out: np.ndarray, tmp: np.ndarray) -> np.ndarray:
    """(a*x + b) mod (2^31 - 1) for every x and every (a, b), exactly, in uint64 buffers."""
    np.multiply(x[:, None], a, out=out)
    out += b
    # v = hi * 2^31 + lo = hi + lo (mod p), and v < p^2 makes hi + lo < 2p: one subtraction of p remains
    np.right_shift(out, np.uint64(31), out=tmp)
    out &= MERSENNE31
    out += tmp
    np.subtract(out, MERSENNE31, out=tmp)  # wraps to a huge value where out < p, so the minimum is out mod p
    np.minimum(out, tmp, out=out)
    return out


def minhash_signatures(texts: Sequence[str], config: MinHashConfig = MinHashConfig()) -> np.ndarray:
    """MinHash signatures [len(texts), bands * rows] uint32 of the texts' word n-gram sets.

    Every text without words gets the all-`EMPTY` signature (the minimum over no shingles), so
    such texts are near-duplicates of each other and of nothing else."""
    return signatures_of(*ngram_hashes_batch(texts, config.ngram), config)


def signatures_of(shingles: np.ndarray, offsets: np.ndarray, config: MinHashConfig) -> np.ndarray:
    """`minhash_signatures` of texts given by their n-gram hashes (`ngram_hashes_batch`)."""
    n = len(offsets) - 1
    x = shingles % MERSENNE31
    a, b = _permutations(config.num_perm, config.seed)
    sig = np.full((n, config.num_perm), EMPTY, np.uint32)
    out = np.empty((min(_CHUNK, len(x)), config.num_perm), np.uint64)
    tmp = np.empty_like(out)
    doc = 0
    while doc < n:
        # documents [doc, end) whose shingles fit one block (at least one document per block)
        end = max(doc + 1, int(np.searchsorted(offsets, offsets[doc] + _CHUNK, side="right")) - 1)
        lo, hi = offsets[doc], offsets[end]
        if hi > lo:
            if hi - lo > len(out):
                out, tmp = (np.empty((hi - lo, config.num_perm), np.uint64) for _ in range(2))
            values = _universal_hash(x[lo:hi], a, b, out[: hi - lo], tmp[: hi - lo])
            nonempty = np.flatnonzero(offsets[doc + 1 : end + 1] > offsets[doc:end])
            sig[doc + nonempty] = np.minimum.reduceat(values, offsets[doc + nonempty] - lo, axis=0)
        doc = end
    return sig


def band_keys(signatures: np.ndarray, config: MinHashConfig = MinHashConfig()) -> np.ndarray:
    """One 64-bit key per band [n, bands] uint64: equal keys mean equal band rows (up to 2^-64)."""
    rows = signatures.reshape(len(signatures), config.bands, config.rows).astype(np.uint64)
    keys = np.zeros((len(signatures), config.bands), np.uint64)
    for r in range(config.rows):
        keys = _fmix64(keys * _GOLDEN + rows[:, :, r])
    return keys


def candidate_pairs(keys: np.ndarray) -> np.ndarray:
    """Index pairs [m, 2] (i < j, unique, sorted) of documents sharing a band key.

    Within each bucket every member pairs with the bucket's first document in stream order (a
    star, not all pairs): enough to connect the bucket, and linear in its size."""
    pairs = [np.zeros((0, 2), np.int64)]
    for band in keys.T:
        order = np.argsort(band, kind="stable")
        sorted_keys = band[order]
        first = np.ones(len(order), bool)
        first[1:] = sorted_keys[1:] != sorted_keys[:-1]
        head = order[first][np.cumsum(first) - 1]
        pairs.append(np.stack([head[~first], order[~first]], axis=1))
    return np.unique(np.concatenate(pairs), axis=0)


def estimated_jaccard(pairs: np.ndarray, signatures: np.ndarray) -> np.ndarray:
    """Each pair's Jaccard estimated from its signatures: the share of equal values (float64)."""
    out = np.zeros(len(pairs))
    step = 65536  # pairs compared at a time, bounding the [pairs, permutations] temporaries
    for s in range(0, len(pairs), step):
        p = pairs[s : s + step]
        out[s : s + step] = (signatures[p[:, 0]] == signatures[p[:, 1]]).mean(axis=1)
    return out


def shingle_sets(texts: Sequence[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Each text's set of word n-gram hashes, sorted: (hashes uint64, offsets int64 of length
    len(texts) + 1), text i's set being hashes[offsets[i]:offsets[i + 1]]."""
    return unique_per_text(*ngram_hashes_batch(texts, n))


def unique_per_text(hashes: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`shingle_sets` of texts given by their n-gram hashes (`ngram_hashes_batch`)."""
    n = len(offsets) - 1
    doc = np.repeat(np.arange(n), np.diff(offsets))
    order = np.lexsort((hashes, doc))
    hashes, doc = hashes[order], doc[order]
    first = np.ones(len(hashes), bool)
    first[1:] = (hashes[1:] != hashes[:-1]) | (doc[1:] != doc[:-1])
    counts = np.bincount(doc[first], minlength=n)
    unique_offsets = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=unique_offsets[1:])
    return hashes[first], unique_offsets


def concat_sets(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The shingle sets of several batches (`shingle_sets` results), as one, in order."""
    hashes = np.concatenate([np.zeros(0, np.uint64), *(h for h, _ in parts)])
    counts = np.concatenate([np.zeros(0, np.int64), *(np.diff(o) for _, o in parts)])
    offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    return hashes, offsets


def exact_jaccard(pairs: np.ndarray, sets: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Each pair's true Jaccard of its shingle sets (`shingle_sets`), float64; two empty sets give 1.

    Both sets of every pair in a block are gathered into one array, sorted within each pair, and
    the values equal to their neighbour in the same pair are the intersection."""
    hashes, offsets = sets
    out = np.ones(len(pairs))
    sizes = np.diff(offsets)
    left, right = sizes[pairs[:, 0]], sizes[pairs[:, 1]]
    ends = np.cumsum(left + right)
    start = 0
    while start < len(pairs):
        # pairs [start, stop) whose values fit one block (at least one pair per block)
        base = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, base + (1 << 22), side="right")))
        out[start:stop] = _block_jaccard(pairs[start:stop], hashes, offsets, left[start:stop], right[start:stop])
        start = stop
    return out


def _block_jaccard(pairs, hashes, offsets, left, right) -> np.ndarray:
    total = left + right
    owner = np.repeat(np.arange(len(pairs)), total)
    pos = np.arange(int(total.sum())) - np.repeat(np.cumsum(total) - total, total)
    n_left = left[owner]
    index = np.where(pos < n_left, offsets[pairs[owner, 0]] + pos, offsets[pairs[owner, 1]] + pos - n_left)
    values = hashes[index]
    order = np.lexsort((values, owner))
    values, owner = values[order], owner[order]
    same = (values[1:] == values[:-1]) & (owner[1:] == owner[:-1])
    inter = np.bincount(owner[1:][same], minlength=len(pairs))
    union = total - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def cluster_roots(n: int, pairs: np.ndarray) -> np.ndarray:
    """Union-find over the pairs: each document's cluster root, the cluster's first index."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]  # path halving
            i = parent[i]
        return i

    for i, j in pairs.tolist():
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return np.array([find(i) for i in range(n)], np.int64)


def near_duplicates(keys: np.ndarray, jaccard: Callable[[np.ndarray], np.ndarray] | None = None,
                    threshold: float = 0.0) -> tuple[np.ndarray, int]:
    """The driver's phase: from every document's band keys (in stream order) the indices to drop
    (all but the first of each cluster) and the number of clusters with more than one document.
    With `threshold` > 0 a candidate pair merges only if `jaccard(pairs)` (`exact_jaccard` or
    `estimated_jaccard` bound to the documents' sets or signatures) reaches it."""
    pairs = candidate_pairs(keys)
    if threshold > 0:
        pairs = pairs[jaccard(pairs) >= threshold]
    roots = cluster_roots(len(keys), pairs)
    drop = np.flatnonzero(roots != np.arange(len(keys)))
    return drop, len(np.unique(roots[drop]))


@dataclass
class ExactDedup(GlobalStep):
    """Keeps the first document of each normalised text (see `normalize`), drops the rest."""

    name = "exact_dedup"
    reason = "exact_duplicate"

    def summarize(self, docs: list[Document]) -> list[tuple[str, bytes]]:
        return [(doc.id, text_hash(doc.text)) for doc in docs]

    def resolve(self, summaries: list[list[tuple[str, bytes]]], stats: StepStats) -> set[str]:
        seen: set[bytes] = set()
        drop = set()
        for summary in summaries:
            for doc_id, key in summary:
                if key in seen:
                    drop.add(doc_id)
                else:
                    seen.add(key)
        return drop


@dataclass
class MinHashDedup(GlobalStep):
    """Near-duplicate removal by MinHash-LSH: keeps the first document (in shard, then stream
    order) of each cluster of candidate pairs. Workers compute band keys, plus what verification
    needs, of their shard; the driver clusters them all at once.

    A candidate pair merges only if its Jaccard reaches `threshold` (0: every candidate merges).
    `verify="exact"` (the default) computes the true Jaccard of the two shingle sets, which the
    workers hand to the driver (8 bytes per shingle, about one per word); `"estimate"` uses the
    share of equal signature values (4 bytes per permutation per document), whose standard
    deviation at 0.8 is about 0.04 with 96 hashes, so pairs just above the threshold are lost and
    pairs just below it kept whatever the threshold. The defaults (16 x 6, exact, 0.8) were chosen
    on planted near-duplicates of python3.11-doc paragraphs and checked on a set generated apart
    from /usr/share/doc paragraphs (benchmarks/data_pipeline.py, BENCHMARKS.md): there exact
    verification keeps precision at 1.0 and recall is what the bands catch."""

    bands: int = 16
    rows: int = 6
    ngram: int = 5
    seed: int = 0
    threshold: float = 0.8
    verify: str = "exact"  # how a candidate's Jaccard is obtained: "exact" (shingle sets) or "estimate" (signatures)
    batch_size: int = 8192  # documents hashed at once (bounds the signature memory of a shard)

    name = "minhash_dedup"
    reason = "near_duplicate"

    def __post_init__(self) -> None:
        self.config = MinHashConfig(self.bands, self.rows, self.ngram, self.seed, self.threshold)
        if self.verify not in VERIFY:
            raise ConfigError(f"minhash verify={self.verify!r} is not one of {', '.join(VERIFY)}")

    def summarize(self, docs: list[Document]) -> tuple[list[str], np.ndarray, object]:
        """The shard's ids, band keys [n, bands] and what verification needs: the shingle sets
        (`shingle_sets`), the signatures [n, bands * rows], or None without verification (an
        empty shard gives empty arrays, so every shard's parts concatenate)."""
        ids, keys, parts = [d.id for d in docs], np.zeros((len(docs), self.bands), np.uint64), []
        for start in range(0, len(docs), self.batch_size):
            hashes, offsets = ngram_hashes_batch([d.text for d in docs[start : start + self.batch_size]], self.ngram)
            sig = signatures_of(hashes, offsets, self.config)
            keys[start : start + len(sig)] = band_keys(sig, self.config)
            if self.threshold > 0:
                parts.append(unique_per_text(hashes, offsets) if self.verify == "exact" else sig)
        if self.threshold == 0:
            return ids, keys, None
        if self.verify == "exact":
            return ids, keys, concat_sets(parts)
        return ids, keys, np.concatenate([np.zeros((0, self.config.num_perm), np.uint32), *parts])

    def resolve(self, summaries: list[tuple[list[str], np.ndarray, object]], stats: StepStats) -> set[str]:
        ids = [doc_id for summary in summaries for doc_id in summary[0]]
        if not ids:
            return set()
        keys = np.concatenate([summary[1] for summary in summaries])
        jaccard = None
        if self.threshold > 0 and self.verify == "exact":
            jaccard = partial(exact_jaccard, sets=concat_sets([summary[2] for summary in summaries]))
        elif self.threshold > 0:
            jaccard = partial(estimated_jaccard, signatures=np.concatenate([summary[2] for summary in summaries]))
        drop, clusters = near_duplicates(keys, jaccard, self.threshold)
        stats.changed["duplicate_clusters"] += clusters
        return {ids[i] for i in drop}
