"""C4's line and page rules (Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a
Unified Text-to-Text Transformer", section 2.2), as datatrove 0.10.1's C4QualityFilter applies them."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import NamedTuple

from lmforge.data.document import Document
from lmforge.data.steps import Filter, StepStats
from lmforge.data.words import sentence_starts, split_lines, split_sentences

CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
END_PUNCTUATION = (".", "?", "!", '"', "'")
POLICY_SUBSTRINGS = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


class C4Result(NamedTuple):
    """The cleaned text (None when dropped), the reason for a drop, and removed lines by reason."""

    text: str | None
    reason: str | None
    removed: Counter


@dataclass
class C4Quality(Filter):
    """Keeps only the lines of a page that look like sentences and drops pages with too few of them.

    Each line (or, with `split_paragraph=False`, each sentence) is stripped and then, in datatrove's
    order: removed if a word is longer than `max_word_length`; stripped of Wikipedia citation marks;
    removed unless it ends in terminal punctuation (and not in "..."); removed if it has fewer than
    `min_words_per_line` words; the whole page is dropped for "lorem ipsum"; the line is removed for
    "javascript"; the page is dropped for a "{"; the line is removed for a cookie or terms-of-use
    phrase. A page whose kept lines hold fewer than `min_num_sentences` sentences is dropped; the
    rest is rewritten to its kept lines. So the page checks only see lines that passed the checks
    before them. -1 disables a numeric check. Reasons are datatrove's with a "c4_" prefix.
    """

    name = "c4_quality"

    split_paragraph: bool = True
    remove_citations: bool = True
    filter_no_terminal_punct: bool = True
    min_num_sentences: int = 5
    min_words_per_line: int = 3
    max_word_length: int = 1000
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True

    def clean(self, text: str) -> C4Result:
        """Apply the rules to one text; `removed` counts the lines removed, by reason."""
        removed: Counter = Counter()
        kept: list[str] = []
        n_sentences = 0
        for line in split_lines(text) if self.split_paragraph else split_sentences(text):
            line = line.strip()
            words = line.split()
            if self.max_word_length != -1 and max(map(len, words), default=0) > self.max_word_length:
                removed["c4_line_too_long_word"] += 1
                continue
            if self.remove_citations:
                line = CITATION.sub("", line)
            if self.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith("...")):
                removed["c4_line_no_terminal_punct"] += 1
                continue
            if len(words) < self.min_words_per_line:
                removed["c4_line_too_few_words"] += 1
                continue
            lower = line.lower()
            if self.filter_lorem_ipsum and "lorem ipsum" in lower:
                return C4Result(None, "c4_lorem_ipsum", removed)
            if self.filter_javascript and "javascript" in lower:
                removed["c4_line_javascript"] += 1
                continue
            if self.filter_curly_bracket and "{" in line:
                return C4Result(None, "c4_curly_bracket", removed)
            if self.filter_policy and any(phrase in lower for phrase in POLICY_SUBSTRINGS):
                removed["c4_line_policy"] += 1
                continue
            if self.min_num_sentences != -1:
                n_sentences += len(sentence_starts(line)) if self.split_paragraph else 1
            kept.append(line)
        if n_sentences < self.min_num_sentences:
            return C4Result(None, "c4_too_few_sentences", removed)
        return C4Result(("\n" if self.split_paragraph else " ").join(kept).strip(), None, removed)

    def reject(self, doc: Document) -> str | None:
        return self.clean(doc.text).reason

    def process(self, docs: Iterator[Document], stats: StepStats) -> Iterator[Document]:
        """Yield kept documents rewritten to their kept lines; removed lines of kept documents go
        to `stats.changed` by reason, and "c4_doc_rewritten" counts the documents whose text changed."""
        for doc in docs:
            result = self.clean(doc.text)
            if result.reason is not None:
                stats.drop(doc, result.reason)
                continue
            stats.changed.update(result.removed)
            if result.text != doc.text:
                stats.changed["c4_doc_rewritten"] += 1
                doc = replace(doc, text=result.text)
            yield doc
