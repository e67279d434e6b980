"""A document quality classifier trained locally, and a domain tagger.

The FineWeb-Edu idea (Penedo et al., "The FineWeb Datasets", 2024: keep the documents a
classifier scores as educational) without downloading anything: the user gives positive
and negative example texts, and a logistic regression over hashed word unigrams and
bigrams (the hashing trick, Weinberger et al., ICML 2009; features as in fastText's
classifier, Joulin et al., EACL 2017) learns to tell them apart in seconds on a CPU. The
model is a weight vector saved as `.npz`; the `quality_classifier` step scores each
document and keeps those at or above a threshold.

`tag_domain` labels documents by regular expressions on their metadata (url, source path)
or text, for per-domain filters and mixing.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from lmforge.data.document import Document
from lmforge.data.steps import Filter, Step, StepStats
from lmforge.errors import ConfigError, DataError
from lmforge.fileio import OutputKind, atomic_path

WORD = re.compile(r"\w+")
DEFAULT_BUCKETS = 1 << 18


@lru_cache(maxsize=1 << 20)
def _bucket(token: str, buckets: int) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "little") % buckets


def features(text: str, buckets: int = DEFAULT_BUCKETS, max_words: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Sparse features of a text: (bucket indices, values) of its hashed lowercase word unigrams
    and bigrams, log(1 + count), L2-normalised. Only the first `max_words` words count."""
    words = WORD.findall(text.lower())[:max_words]
    grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
    if not grams:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    index, counts = np.unique(np.fromiter((_bucket(g, buckets) for g in grams), np.int64, len(grams)), return_counts=True)
    values = np.log1p(counts).astype(np.float32)
    return index, values / np.linalg.norm(values)


def _score(weights: np.ndarray, bias: float, feats: tuple[np.ndarray, np.ndarray]) -> float:
    index, values = feats
    z = float(values @ weights[index]) + bias
    return 1.0 / (1.0 + np.exp(-z))


def train_classifier(positive: Iterable[str], negative: Iterable[str], buckets: int = DEFAULT_BUCKETS, epochs: int = 20,
                     lr: float = 0.5, l2: float = 1e-6, seed: int = 0) -> tuple[np.ndarray, float]:
    """Logistic regression by AdaGrad SGD over shuffled examples; returns (weights, bias)."""
    examples = [(features(t, buckets), 1.0) for t in positive] + [(features(t, buckets), 0.0) for t in negative]
    if not any(y == 1.0 for _, y in examples) or not any(y == 0.0 for _, y in examples):
        raise DataError("the quality classifier needs at least one positive and one negative example text")
    weights = np.zeros(buckets, np.float64)
    grad_sq = np.full(buckets, 1e-8)
    bias, bias_sq = 0.0, 1e-8
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        for i in rng.permutation(len(examples)):
            (index, values), y = examples[i]
            error = _score(weights, bias, (index, values)) - y
            grad = error * values + l2 * weights[index]
            grad_sq[index] += grad * grad
            weights[index] -= lr * grad / np.sqrt(grad_sq[index])
            bias_sq += error * error
            bias -= lr * error / np.sqrt(bias_sq)
    return weights.astype(np.float32), bias


def evaluate_classifier(weights: np.ndarray, bias: float, positive: Iterable[str], negative: Iterable[str]) -> float:
    """Accuracy at threshold 0.5 on positive and negative texts."""
    right = [_score(weights, bias, features(t, len(weights))) >= 0.5 for t in positive]
    right += [_score(weights, bias, features(t, len(weights))) < 0.5 for t in negative]
    return sum(right) / max(len(right), 1)


CLASSIFIER_OUTPUT = OutputKind("quality classifier (.npz)", magic=b"PK\x03\x04")


def save_classifier(path: str | Path, weights: np.ndarray, bias: float) -> None:
    """Write the model as .npz, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, weights=weights, bias=np.float64(bias))


@cache
def load_classifier(path: str) -> tuple[np.ndarray, float]:
    """A model written by `save_classifier` (cached per process)."""
    try:
        with np.load(path) as z:
            return z["weights"], float(z["bias"])
    except (OSError, KeyError, ValueError):
        raise ConfigError(f"{path} is not a quality classifier; train one with `lmforge data train-classifier`") from None


@dataclass
class QualityClassifier(Filter):
    """Scores each document with a trained classifier (metadata "quality_score") and drops those
    below `threshold` ("quality_below_threshold")."""

    model: str = ""
    threshold: float = 0.5

    name = "quality_classifier"

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("step 'quality_classifier' needs model = the .npz from `lmforge data train-classifier`")
        load_classifier(self.model)

    def reject(self, doc: Document) -> str | None:
        weights, bias = load_classifier(self.model)
        score = _score(weights, bias, features(doc.text, len(weights)))
        doc.metadata["quality_score"] = round(score, 4)
        return None if score >= self.threshold else "quality_below_threshold"


@dataclass
class TagDomain(Step):
    """Sets metadata "domain" from the first matching rule: each rule is a table with `pattern`
    (a regular expression), `domain`, and `field` (a metadata key, or "text"; default "url")."""

    rules: list[dict] = field(default_factory=list)

    name = "tag_domain"

    def __post_init__(self) -> None:
        self._compiled = []
        for rule in self.rules:
            if not isinstance(rule, dict) or not {"pattern", "domain"} <= set(rule) or set(rule) - {"pattern", "domain", "field"}:
                raise ConfigError(f"tag_domain rule {rule!r} must be a table with pattern, domain and optionally field")
            try:
                pattern = re.compile(rule["pattern"])
            except re.error as e:
                raise ConfigError(f"tag_domain pattern {rule['pattern']!r} is not a regular expression: {e}") from None
            self._compiled.append((rule.get("field", "url"), pattern, rule["domain"]))

    def process(self, docs: Iterator[Document], stats: StepStats) -> Iterator[Document]:
        for doc in docs:
            for key, pattern, domain in self._compiled:
                value = doc.text if key == "text" else str(doc.metadata.get(key, ""))
                if pattern.search(value):
                    doc.metadata["domain"] = domain
                    stats.changed[f"domain:{domain}"] += 1
                    break
            yield doc
