"""The pipeline step contract: a picklable callable over a Document stream, with stats.

A `Step` maps an iterator of Documents to an iterator of Documents and records in a
`StepStats` what it saw, what it dropped (by reason) and what it changed (by kind). Steps
hold only their configuration, so they pickle and run unchanged in a local worker process
or a Ray task (the datatrove pattern: Penedo et al., "DataTrove", 2024). Stats from
different workers merge by addition.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from lmforge.data.document import Document


@dataclass
class StepStats:
    """Counters of one step: documents and characters in and out, drops by reason, changes by kind."""

    docs_in: int = 0
    docs_out: int = 0
    chars_in: int = 0
    chars_out: int = 0
    dropped: Counter = field(default_factory=Counter)
    changed: Counter = field(default_factory=Counter)
    excluded: list | None = field(default=None, compare=False, repr=False)  # (document, reason) of each drop, when kept
    step: str = field(default="", compare=False, repr=False)

    def drop(self, doc: Document, reason: str) -> None:
        """Count `doc` as dropped for `reason`, and keep it with its reason when exclusions are kept."""
        self.dropped[reason] += 1
        if self.excluded is not None:
            self.excluded.append((doc, self.step, reason))

    def merge(self, other: StepStats) -> StepStats:
        """Add another worker's counters into these; returns self."""
        self.docs_in += other.docs_in
        self.docs_out += other.docs_out
        self.chars_in += other.chars_in
        self.chars_out += other.chars_out
        self.dropped.update(other.dropped)
        self.changed.update(other.changed)
        return self

    @classmethod
    def from_dict(cls, d: dict) -> StepStats:
        return cls(d["docs_in"], d["docs_out"], d["chars_in"], d["chars_out"], Counter(d["dropped"]), Counter(d["changed"]))

    def to_dict(self) -> dict:
        return {"docs_in": self.docs_in, "docs_out": self.docs_out, "chars_in": self.chars_in, "chars_out": self.chars_out,
                "dropped": dict(sorted(self.dropped.items())), "changed": dict(sorted(self.changed.items()))}


class Step:
    """A transformation of a document stream. Subclasses implement `process`; `__call__` counts."""

    name = "step"

    def process(self, docs: Iterator[Document], stats: StepStats) -> Iterator[Document]:
        """Yield the documents that survive, changed where the step changes them; record drops in stats."""
        raise NotImplementedError

    def __call__(self, docs: Iterator[Document], stats: StepStats) -> Iterator[Document]:
        def counted_in():
            for doc in docs:
                stats.docs_in += 1
                stats.chars_in += len(doc.text)
                yield doc

        for doc in self.process(counted_in(), stats):
            stats.docs_out += 1
            stats.chars_out += len(doc.text)
            yield doc


class Filter(Step):
    """A step that keeps or drops each document on its own; `reject` names the reason to drop."""

    name = "filter"

    def reject(self, doc: Document) -> str | None:
        """None to keep the document, else a short reason (a stats key) for dropping it."""
        raise NotImplementedError

    def process(self, docs: Iterator[Document], stats: StepStats) -> Iterator[Document]:
        for doc in docs:
            reason = self.reject(doc)
            if reason is None:
                yield doc
            else:
                stats.drop(doc, reason)


def run_steps(steps: list[Step], docs: Iterator[Document],
              excluded: list | None = None) -> tuple[Iterator[Document], list[StepStats]]:
    """Chain steps lazily over a stream; the stats fill in as the returned iterator is consumed.

    With `excluded` (a list), every dropped document is appended to it as (document, step name, reason),
    as datatrove's exclusion writers keep what a filter removed."""
    stats = [StepStats(excluded=excluded, step=step.name) for step in steps]
    for step, s in zip(steps, stats):
        docs = step(docs, s)
    return docs, stats


class GlobalStep(Step):
    """A step whose decisions need every document (deduplication).

    Executors call `summarize` on each shard in its worker, `resolve` once on all the
    summaries in shard order, and drop the returned ids from the next stage's input; inside
    one stream `process` does the same on the buffered stream. Either way the document that
    comes first (in shard order, then stream order) is the one a rule keeps.
    """

    name = "global"
    reason = "duplicate"

    def summarize(self, docs: list[Document]) -> Any:
        """A picklable summary of one shard's documents (ids with hashes or signatures)."""
        raise NotImplementedError

    def resolve(self, summaries: list[Any], stats: StepStats) -> set[str]:
        """The ids to drop, given every shard's summary in shard order."""
        raise NotImplementedError

    def process(self, docs: Iterator[Document], stats: StepStats) -> Iterator[Document]:
        buffered = list(docs)
        drop = self.resolve([self.summarize(buffered)], stats)
        yield from drop_ids(buffered, drop, self.reason, stats)


def drop_ids(docs: Iterable[Document], drop: set[str], reason: str, stats: StepStats) -> Iterator[Document]:
    """The documents whose ids are not in `drop`, counting the others under `reason`."""
    for doc in docs:
        if doc.id in drop:
            stats.drop(doc, reason)
        else:
            yield doc
