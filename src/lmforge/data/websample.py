"""`websample`: a built-in corpus of web pages, generated offline from real English prose.

Real crawls cannot be fetched here, so this corpus reproduces what a crawl holds, around
real text: each article is a run of paragraphs from the Python reference topics (pydoc),
wrapped in a site template (navigation, cookie banner, sidebar links, footer). A seeded
share of the pages carries what a curation pipeline must handle: near-duplicate copies of
an article on another site (light edits, different boilerplate), exact mirrors, contact
details (e-mail addresses, phone numbers, public IP addresses), link farms and keyword
spam, "lorem ipsum" placeholders and pages with no main text. Deterministic for a seed.
"""

from __future__ import annotations

import html
import random
from typing import Iterator

from lmforge.data.document import Document

SITES = ("docs-mirror.example", "pyguide.example", "learnpython.example", "codenotes.example", "devblog.example")
NAV = ("Home", "Tutorials", "Reference", "Blog", "About", "Contact", "Login", "Sign up")
COOKIE = "We use cookies to improve your experience. By continuing you accept our cookie policy."
SPAM_WORDS = ("cheap", "best", "python", "course", "download", "free", "now", "online", "deal", "top")
LOREM = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore."


def _articles(min_words: int = 120) -> list[tuple[str, list[str]]]:
    """(title, paragraphs) of every pydoc topic with enough running prose."""
    from lmforge.data.readers import read_pydoc

    out = []
    for doc in read_pydoc():
        paragraphs = [" ".join(p.split()) for p in doc.text.split("\n\n")]
        prose = [p for p in paragraphs if len(p.split()) >= 12 and p.endswith(".") and not p.startswith(("*", "=", ">>>"))]
        if sum(len(p.split()) for p in prose) >= min_words:
            out.append((doc.id.removeprefix("pydoc/"), prose))
    return out


def _edit(paragraphs: list[str], rate: float, rng: random.Random) -> list[str]:
    """Replace a share `rate` of the words with neighbouring words (a light rewrite)."""
    out = []
    for p in paragraphs:
        words = p.split()
        for i in range(len(words)):
            if rng.random() < rate:
                words[i] = words[rng.randrange(len(words))]
        out.append(" ".join(words))
    return out


def _page(site: str, title: str, body: list[str], rng: random.Random) -> str:
    nav = "".join(f"<li><a href='/{n.lower()}'>{n}</a></li>" for n in NAV)
    side = "".join(f"<li><a href='/t/{rng.randrange(999)}'>Related post {rng.randrange(99)}</a></li>" for _ in range(6))
    paragraphs = "".join(f"<p>{html.escape(p)}</p>" for p in body)
    footer = f"<p>Copyright {rng.randrange(2015, 2027)} {site}. All rights reserved.</p>"
    return (f"<!doctype html><html><head><title>{html.escape(title)} | {site}</title></head><body>"
            f"<div class='cookie'>{COOKIE}</div><nav><ul>{nav}</ul></nav>"
            f"<main><article><h1>{html.escape(title)}</h1>{paragraphs}</article></main>"
            f"<aside><h3>Related</h3><ul>{side}</ul></aside><footer>{footer}</footer></body></html>")


def _contact(rng: random.Random) -> str:
    """A closing paragraph of the article with an author's contact details."""
    name = rng.choice(("maria", "j.smith", "support", "webmaster", "li.wei"))
    return (f"If you have questions about this article, write to {name}@"
            f"{rng.choice(('mailhost.org', 'corp-mail.net', 'inbox.io'))} or call the author on +44 20 7946 "
            f"{rng.randrange(1000, 9999)}; the examples run on our server at {rng.randrange(11, 99)}."
            f"{rng.randrange(10, 250)}.{rng.randrange(10, 250)}.{rng.randrange(10, 250)}.")


def read_websample(pages: int = 400, seed: int = 0) -> Iterator[Document]:
    """The generated web pages as HTML documents (metadata: url, format "html", kind)."""
    rng = random.Random(seed)
    articles = _articles()
    made: list[tuple[str, list[str]]] = []
    for i in range(pages):
        site = rng.choice(SITES)
        roll = rng.random()
        if roll < 0.10 and made:
            title, body = rng.choice(made)
            body, kind = _edit(body, 0.03, rng), "near_duplicate"
        elif roll < 0.15 and made:
            (title, body), kind = rng.choice(made), "mirror"
        elif roll < 0.20:
            title, kind = "Top deals", "spam"
            body = [" ".join(rng.choice(SPAM_WORDS) for _ in range(40)) + "!" for _ in range(5)]
        elif roll < 0.23:
            title, body, kind = "Coming soon", [LOREM] * 3, "placeholder"
        elif roll < 0.26:
            title, body, kind = "Archive", [], "no_text"
        else:
            title, body = articles[rng.randrange(len(articles))]
            start = rng.randrange(max(1, len(body) - 3))
            body, kind = body[start : start + rng.randint(3, 8)], "article"
            made.append((title, body))
            if rng.random() < 0.3:
                body, kind = [*body, _contact(rng)], "article_with_contact"
        url = f"https://{site}/{title.lower().replace(' ', '-')}/{i}"
        yield Document(_page(site, title, body, rng), url, {"url": url, "format": "html", "kind": kind})
