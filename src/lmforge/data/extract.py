"""HTML -> main text with trafilatura (Barbaresi, "Trafilatura: A Web Scraping Library and
Command-Line Tool for Text Discovery and Extraction", ACL 2021).

Navigation, headers, footers, cookie banners and other boilerplate are left out; paragraphs
become lines. Documents that are not HTML (no `format = "html"` in their metadata and no
tag at their start) pass unchanged, so a pipeline can mix web pages with plain text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from lmforge.data.document import Document
from lmforge.data.steps import Step, StepStats
from lmforge.errors import ConfigError


def _looks_like_html(doc: Document) -> bool:
    return doc.metadata.get("format") == "html" or doc.text.lstrip()[:1] == "<"


@dataclass
class ExtractHTML(Step):
    """Replaces each HTML document by its main text; drops pages with none ("no_main_text")."""

    include_tables: bool = True
    include_comments: bool = False
    favor_precision: bool = False  # True: less boilerplate kept, at the cost of some main text

    name = "extract_html"

    def __post_init__(self) -> None:
        try:
            import trafilatura  # noqa: F401
        except ImportError:
            raise ConfigError("step 'extract_html' needs trafilatura: pip install 'lmforge[data]'") from None

    def process(self, docs: Iterator[Document], stats: StepStats) -> Iterator[Document]:
        import trafilatura

        for doc in docs:
            if not _looks_like_html(doc):
                yield doc
                continue
            text = trafilatura.extract(doc.text, include_tables=self.include_tables, include_comments=self.include_comments,
                                       favor_precision=self.favor_precision, deduplicate=False)
            if not text or not text.strip():
                stats.drop(doc, "no_main_text")
                continue
            stats.changed["extracted"] += 1
            yield Document(text, doc.id, {**doc.metadata, "format": "text"})
