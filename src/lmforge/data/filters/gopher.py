"""Gopher's quality and repetition rules (Rae et al. 2021, "Scaling Language Models: Methods, Analysis &
Insights from Training Gopher", section A.1.1 and table A1), as datatrove 0.10.1 applies them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from lmforge.data.document import Document
from lmforge.data.steps import Filter
from lmforge.data.words import (
    duplicated_ngram_chars,
    duplicates,
    is_symbol_word,
    split_line_runs,
    split_lines,
    split_paragraphs,
    split_words,
    top_ngram_chars,
)

STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})


@dataclass
class GopherQuality(Filter):
    """Drops documents that do not look like natural prose: too few or too many words, implausible
    word lengths, many hashes or ellipses, mostly bullet lines or lines trailing off, few
    alphabetic words, almost no English stop words.

    Words are `split_words` tokens; those made only of punctuation ("symbol words") are left out of
    the word count and the mean length but, as in datatrove, not from the hash, ellipsis and
    alphabetic ratios. A threshold of 0 or None disables its check; a text without words is short.
    """

    name = "gopher_quality"

    min_doc_words: int | None = 50
    max_doc_words: int | None = 100_000
    min_avg_word_length: float | None = 3
    max_avg_word_length: float | None = 10
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    max_non_alpha_words_ratio: float | None = 0.8  # datatrove's name: the least share of words with a letter
    min_stop_words: int | None = 2
    stop_words: frozenset[str] = STOP_WORDS

    def reject(self, doc: Document) -> str | None:
        text = doc.text
        words = split_words(text)
        counts = Counter(words)
        word_chars = n_non_symbol = n_alpha = 0
        for word, count in counts.items():
            if not is_symbol_word(word):
                n_non_symbol += count
                word_chars += len(word) * count
            if any(map(str.isalpha, word)):
                n_alpha += count

        if n_non_symbol < (self.min_doc_words or 1):
            return "gopher_short_doc"
        if self.max_doc_words and n_non_symbol > self.max_doc_words:
            return "gopher_long_doc"
        mean_length = word_chars / n_non_symbol
        if self.min_avg_word_length and mean_length < self.min_avg_word_length:
            return "gopher_below_avg_threshold"
        if self.max_avg_word_length and mean_length > self.max_avg_word_length:
            return "gopher_above_avg_threshold"
        n_words = len(words)
        if self.max_symbol_word_ratio and text.count("#") / n_words > self.max_symbol_word_ratio:
            return "gopher_too_many_hashes"
        if self.max_symbol_word_ratio and (text.count("...") + text.count("…")) / n_words > self.max_symbol_word_ratio:
            return "gopher_too_many_ellipsis"
        lines = split_lines(text)
        if self.max_bullet_lines_ratio:
            bullets = sum(line.lstrip().startswith(("•", "-")) for line in lines)
            if bullets / len(lines) > self.max_bullet_lines_ratio:
                return "gopher_too_many_bullets"
        if self.max_ellipsis_lines_ratio:
            trailing = sum(line.rstrip().endswith(("...", "…")) for line in lines)
            if trailing / len(lines) > self.max_ellipsis_lines_ratio:
                return "gopher_too_many_end_ellipsis"
        if self.max_non_alpha_words_ratio and n_alpha / n_words < self.max_non_alpha_words_ratio:
            return "gopher_below_alpha_threshold"
        if self.min_stop_words and len(self.stop_words & counts.keys()) < self.min_stop_words:
            return "gopher_enough_stop_words"
        return None


@dataclass
class GopherRepetition(Filter):
    """Drops documents that repeat themselves: duplicated paragraphs or lines (by count and by
    characters), one word 2-, 3- or 4-gram covering too much of the text, or too many characters
    inside repeated 5- to 10-grams. Fractions of characters are of the whole text's length.

    Paragraphs are split at blank lines, lines at runs of newlines, words by `split_words`, as in
    datatrove. Reasons are datatrove's with a "gopher_" prefix. A fraction of 0 or None disables its check.
    """

    name = "gopher_repetition"

    dup_line_frac: float | None = 0.3
    dup_para_frac: float | None = 0.3
    dup_line_char_frac: float | None = 0.2
    dup_para_char_frac: float | None = 0.2
    top_n_grams: tuple[tuple[int, float], ...] = ((2, 0.2), (3, 0.18), (4, 0.16))
    dup_n_grams: tuple[tuple[int, float], ...] = ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))

    def reject(self, doc: Document) -> str | None:
        text = doc.text
        if not text:
            return "gopher_empty"
        paragraphs = split_paragraphs(text)
        n_dup, dup_chars = duplicates(paragraphs)
        if self.dup_para_frac and n_dup / len(paragraphs) > self.dup_para_frac:
            return "gopher_dup_para_frac"
        if self.dup_para_char_frac and dup_chars / len(text) > self.dup_para_char_frac:
            return "gopher_dup_para_char_frac"
        lines = split_line_runs(text)
        n_dup, dup_chars = duplicates(lines)
        if self.dup_line_frac and n_dup / len(lines) > self.dup_line_frac:
            return "gopher_dup_line_frac"
        if self.dup_line_char_frac and dup_chars / len(text) > self.dup_line_char_frac:
            return "gopher_dup_line_char_frac"
        words = split_words(text)
        for n, frac in self.top_n_grams:
            if top_ngram_chars(words, n) / len(text) > frac:
                return f"gopher_top_{n}_gram"
        for n, frac in self.dup_n_grams:
            if duplicated_ngram_chars(words, n) / len(text) > frac:
                return f"gopher_duplicated_{n}_n_grams"
        return None
