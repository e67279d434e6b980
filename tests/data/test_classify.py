"""Quality classifier, domain tagging and HTML extraction steps."""

from __future__ import annotations

import random

import pytest

from lmforge.cli import main
from lmforge.data.classify import (
    QualityClassifier,
    TagDomain,
    evaluate_classifier,
    features,
    save_classifier,
    train_classifier,
)
from lmforge.data.document import Document
from lmforge.data.readers import read_pydoc
from lmforge.data.steps import StepStats
from lmforge.errors import ConfigError


def prose_and_junk(n: int = 120) -> tuple[list[str], list[str]]:
    prose = [d.text for d in read_pydoc() if len(d.text) > 400][:n]
    rng = random.Random(0)
    vocab = " ".join(prose).split()
    junk = [" ".join(rng.choice(vocab) for _ in range(120)) for _ in range(n)]  # same words, no sentences
    return prose, junk


def run(step, docs):
    stats = StepStats()
    return list(step(iter(docs), stats)), stats


def test_features_are_normalised_hashed_ngrams():
    index, values = features("the cat the cat sat", buckets=1 << 12)
    assert len(index) == len(set(index.tolist())) and (index < 1 << 12).all()
    assert values @ values == pytest.approx(1.0)
    assert features("", 16)[0].size == 0


def test_classifier_separates_prose_from_word_salad(tmp_path):
    prose, junk = prose_and_junk()
    weights, bias = train_classifier(prose[::2], junk[::2], epochs=10)
    assert evaluate_classifier(weights, bias, prose[1::2], junk[1::2]) >= 0.9  # held out
    save_classifier(tmp_path / "q.npz", weights, bias)
    step = QualityClassifier(model=str(tmp_path / "q.npz"), threshold=0.5)
    docs = [Document(t, f"p{i}") for i, t in enumerate(prose[1::2][:20])] + [Document(t, f"j{i}") for i, t in enumerate(junk[1::2][:20])]
    kept, stats = run(step, docs)
    assert sum(d.id.startswith("p") for d in kept) >= 18 and sum(d.id.startswith("j") for d in kept) <= 2
    assert all("quality_score" in d.metadata for d in kept)
    assert stats.dropped["quality_below_threshold"] >= 18


def test_classifier_needs_both_classes_and_a_real_model(tmp_path):
    with pytest.raises(Exception, match="positive and one negative"):
        train_classifier(["a b c"], [])
    (tmp_path / "x.npz").write_text("not a model")
    with pytest.raises(ConfigError, match="not a quality classifier"):
        QualityClassifier(model=str(tmp_path / "x.npz"))


def test_cli_train_classifier(tmp_path, capsys):
    prose, junk = prose_and_junk(60)
    for name, texts in (("good", prose), ("bad", junk)):
        (tmp_path / name).mkdir()
        for i, t in enumerate(texts):
            (tmp_path / name / f"{i}.txt").write_text(t)
    code = main(["data", "train-classifier", "--positive", str(tmp_path / "good"), "--negative", str(tmp_path / "bad"),
                 "--out", str(tmp_path / "m.npz"), "--epochs", "5"])
    assert code == 0 and (tmp_path / "m.npz").is_file()
    assert "held-out" in capsys.readouterr().out


def test_tag_domain_first_matching_rule_wins():
    step = TagDomain(rules=[{"pattern": r"github\.com", "domain": "code"}, {"pattern": r"\.edu/", "domain": "edu"},
                            {"field": "text", "pattern": r"^def ", "domain": "code"}])
    docs = [Document("x", "1", {"url": "https://github.com/a"}), Document("y", "2", {"url": "https://u.edu/p"}),
            Document("def f(): pass", "3", {}), Document("plain", "4", {"domain": "web"})]
    out, stats = run(step, docs)
    assert [d.metadata.get("domain") for d in out] == ["code", "edu", "code", "web"]
    assert stats.changed == {"domain:code": 2, "domain:edu": 1}
    with pytest.raises(ConfigError, match="regular expression"):
        TagDomain(rules=[{"pattern": "(", "domain": "x"}])


def test_extract_html_keeps_the_article_and_drops_boilerplate():
    pytest.importorskip("trafilatura")
    from lmforge.data.extract import ExtractHTML
    from lmforge.data.websample import read_websample

    pages = list(read_websample(pages=40))
    empty = Document("<html><body><div></div></body></html>", "empty")
    out, stats = run(ExtractHTML(), pages + [Document("plain text stays", "t"), empty])
    texts = {d.id: d.text for d in out}
    assert texts["t"] == "plain text stays"
    article = next(p for p in pages if p.metadata["kind"] == "article")
    assert "cookie policy" not in texts[article.id] and "Sign up" not in texts[article.id]
    assert len(texts[article.id].split()) > 40
    assert "empty" not in texts and stats.dropped == {"no_main_text": 1}
