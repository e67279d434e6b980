import pytest

from lmforge.data.split import choose_validation, id_hash
from lmforge.errors import DataError


def test_split_is_deterministic_hash_ordered_and_sized():
    sizes = [(f"doc{i}", 100) for i in range(200)]
    val = choose_validation(sizes, 1000)
    assert len(val) == 10 and val == choose_validation(list(reversed(sizes)), 1000)
    ranked = sorted(sizes, key=lambda s: id_hash(s[0]))
    assert val == {doc for doc, _ in ranked[:10]}


def test_validation_capped_at_a_tenth_and_adding_documents_is_stable():
    sizes = [(f"doc{i}", 100) for i in range(50)]
    assert len(choose_validation(sizes, 10**9)) == 5
    old = {f"doc{i}" for i in range(200)}
    small = choose_validation([(d, 100) for d in old], 1000)
    big = choose_validation([(f"doc{i}", 100) for i in range(400)], 1000)
    assert big & old <= small  # growing the corpus never moves an old training document into validation


def test_needs_two_documents():
    with pytest.raises(DataError, match="at least 2"):
        choose_validation([("a", 10), ("b", 0)], 5)
