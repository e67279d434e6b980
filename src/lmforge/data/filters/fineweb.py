"""FineWeb's own quality rules (Penedo et al. 2024, "The FineWeb Datasets: Decanting the Web for the
Finest Text Data at Scale", section 3.3), as datatrove 0.10.1 applies them."""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.data.document import Document
from lmforge.data.steps import Filter
from lmforge.data.words import TERMINAL_PUNCTUATION, duplicates, split_nonblank_lines, split_words


@dataclass
class FineWebQuality(Filter):
    """Drops documents whose lines mostly lack terminal punctuation, are mostly short, repeat each
    other, or that are lists (many newlines per word).

    Lines are the non-blank lines between newlines (not stripped). Thresholds and their strict or
    inclusive comparisons are datatrove's; reasons are datatrove's with a "fineweb_" prefix.
    """

    name = "fineweb_quality"

    line_punct_thr: float = 0.12
    line_punct_exclude_zero: bool = False
    stop_chars: tuple[str, ...] = TERMINAL_PUNCTUATION
    short_line_thr: float = 0.67
    short_line_length: int = 30
    char_duplicates_ratio: float = 0.01
    new_line_ratio: float = 0.3

    def reject(self, doc: Document) -> str | None:
        text = doc.text
        lines = split_nonblank_lines(text)
        if not lines:
            return "fineweb_empty"
        ratio = sum(line.endswith(self.stop_chars) for line in lines) / len(lines)
        if ratio < self.line_punct_thr and not (ratio == 0 and self.line_punct_exclude_zero):
            return "fineweb_line_punct_ratio"
        ratio = sum(len(line) <= self.short_line_length for line in lines) / len(lines)
        if ratio > self.short_line_thr:
            return "fineweb_short_line_ratio"
        newlines = text.count("\n")
        if duplicates(lines)[1] / (len(text) - newlines) > self.char_duplicates_ratio:
            return "fineweb_char_dup_ratio"
        if newlines / len(split_words(text)) > self.new_line_ratio:
            return "fineweb_list_ratio"
        return None
