import pickle

import pytest

from lmforge.data.document import Document
from lmforge.data.langid import UNDETERMINED, LanguageID, detect_language, model_languages
from lmforge.data.steps import StepStats
from lmforge.errors import ConfigError

PARAGRAPHS = {
    "en": "The library reads every file in the directory, keeps the documents that pass the filters and writes "
          "them to shards.\nEach shard holds a few thousand documents, so workers can process them in parallel.",
    "de": "Die Bibliothek liest jede Datei im Verzeichnis, behält die Dokumente, die alle Filter bestehen, und "
          "schreibt sie in Teilstücke.\nJedes Teilstück enthält einige tausend Dokumente.",
    "fr": "La bibliothèque lit chaque fichier du répertoire, garde les documents qui passent les filtres et les "
          "écrit dans des fragments.\nChaque fragment contient quelques milliers de documents.",
    "es": "La biblioteca lee cada archivo del directorio, conserva los documentos que superan los filtros y los "
          "escribe en fragmentos.\nCada fragmento contiene unos pocos miles de documentos.",
    "ru": "Библиотека читает каждый файл в каталоге, сохраняет документы, прошедшие фильтры, и записывает их "
          "в отдельные части.\nКаждая часть содержит несколько тысяч документов.",
    "zh": "这个程序库会读取目录中的每一个文件，保留通过所有过滤器的文档，并把它们写入分片。\n每个分片包含几千个文档，因此可以并行处理。",
    "ja": "このライブラリはディレクトリ内のすべてのファイルを読み込み、フィルターを通過した文書を残して、"
          "シャードに書き出します。\n各シャードには数千の文書が含まれています。",
}


def docs(*langs):
    return [Document(PARAGRAPHS[lang], lang) for lang in langs]


@pytest.mark.parametrize("lang", sorted(PARAGRAPHS))
def test_paragraphs_are_classified_right_and_confidently(lang):
    label, score = detect_language(PARAGRAPHS[lang])
    assert label == lang and score > 0.9


def test_keeps_wanted_languages_and_labels_metadata():
    stats = StepStats()
    out = list(LanguageID(languages=["EN", "de"])(iter(docs("en", "fr", "de", "ja")), stats))
    assert [d.id for d in out] == ["en", "de"]
    assert out[0].metadata["language"] == "en" and 0.9 < out[0].metadata["language_score"] <= 1.0
    assert stats.dropped == {"language_not_wanted": 2} and stats.docs_in == 4 and stats.docs_out == 2


def test_threshold_drops_uncertain_labels_before_asking_if_wanted():
    doc = Document("foo(bar) + baz[0]", "code")
    _, score = detect_language(doc.text)
    assert score < 0.5
    stats = StepStats()
    assert list(LanguageID(languages=["fr"])(iter([doc]), stats)) == []
    assert stats.dropped == {"language_below_threshold": 1}
    _, en_score = detect_language(PARAGRAPHS["en"])
    assert [d.id for d in LanguageID(min_score=en_score)(iter(docs("en")), StepStats())] == ["en"]
    assert list(LanguageID(min_score=min(1.0, en_score + 1e-4))(iter(docs("en")), StepStats())) == []
    assert [d.id for d in LanguageID(min_score=0.0)(iter([doc]), StepStats())] == ["code"]


def test_route_labels_everything_and_drops_nothing():
    stats = StepStats()
    texts = docs("en", "ru", "zh") + [Document("", "empty")]
    out = list(LanguageID(languages=["en"], route=True)(iter(texts), stats))
    assert [d.metadata["language"] for d in out] == ["en", "ru", "zh", UNDETERMINED]
    assert not stats.dropped


def test_empty_and_whitespace_text_is_undetermined():
    assert detect_language("") == (UNDETERMINED, 0.0)
    assert detect_language(" \n\t\0 ") == (UNDETERMINED, 0.0)
    stats = StepStats()
    assert list(LanguageID()(iter([Document("\n\n", "blank")]), stats)) == []
    assert stats.dropped == {"language_below_threshold": 1}


def test_classifies_a_bounded_prefix_on_one_line():
    mixed = PARAGRAPHS["en"] + "\n\n" + PARAGRAPHS["de"] * 20
    assert detect_language(mixed, max_chars=len(PARAGRAPHS["en"]))[0] == "en"
    assert detect_language(mixed, max_chars=len(mixed))[0] == "de"
    assert detect_language(PARAGRAPHS["fr"]) == detect_language(PARAGRAPHS["fr"].replace("\n", " "))


def test_step_pickles_without_the_model_and_works_after_unpickling():
    step = LanguageID(languages=["es"])
    blob = pickle.dumps(step)
    assert len(blob) < 1000  # configuration only: the model stays in the module cache
    out = list(pickle.loads(blob)(iter(docs("es", "en")), StepStats()))
    assert [d.id for d in out] == ["es"]


def test_bad_config_fails_with_a_useful_message():
    assert {"en", "de", "zh", "yue", "ceb"} <= model_languages() and len(model_languages()) == 176
    with pytest.raises(ConfigError, match="eng"):
        LanguageID(languages=["eng"])
    with pytest.raises(ConfigError, match="non-empty list"):
        LanguageID(languages="en")
    with pytest.raises(ConfigError, match="non-empty list"):
        LanguageID(languages=[])
    with pytest.raises(ConfigError, match="min_score"):
        LanguageID(min_score=1.5)
