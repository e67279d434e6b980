import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmforge.serve.detokenize import IncrementalDetokenizer
from lmforge.serve.params import SamplingParams

CODE = "def area(radius):\n    return 3.14159 * radius ** 2\n"


def run(tokenizer, ids, chunks=1, **params):
    """Push `ids` in groups of `chunks`, then flush; returns (deltas, stop, the push index of the stop)."""
    detok = IncrementalDetokenizer(tokenizer, SamplingParams(**params))
    deltas, stopped_at = [], None
    for n, i in enumerate(range(0, len(ids), chunks)):
        delta = detok.push(ids[i : i + chunks])
        deltas.append(delta.text)
        if delta.stop is not None:
            assert stopped_at is None and delta.stop == detok.stop  # reported once
            stopped_at = n
    deltas.append(detok.flush())
    assert "".join(deltas) == detok.text
    return deltas, detok.stop, stopped_at


def reference(tokenizer, ids, stop=(), include=False, skip_special=True):
    """The whole text decoded at once, cut at the stop string that completes first."""
    text = tokenizer.decode([t for t in ids if not (skip_special and tokenizer.is_special(t))])
    hits = [(text.find(s) + len(s), text.find(s), s) for s in stop if s in text]
    if not hits:
        return text, None
    end, start, s = min(hits)
    return text[: end if include else start], s


def pieces(tokenizer, ids):
    return [tokenizer.decode([t]) for t in ids]


@pytest.mark.parametrize("span", [2, 3])
def test_stop_string_split_over_tokens_stops_on_the_token_that_completes_it(tokenizer, span):
    ids = tokenizer.encode(CODE)
    parts = pieces(tokenizer, ids)
    # a stop string from the middle of one token to the middle of a token `span - 1` later
    i = next(i for i in range(len(parts) - span) if len(parts[i]) > 1 and len(parts[i + span - 1]) > 1)
    stop = parts[i][1:] + "".join(parts[i + 1 : i + span - 1]) + parts[i + span - 1][:1]
    assert CODE.find(stop) == len("".join(parts[:i])) + 1  # its first occurrence is the one built
    deltas, found, at = run(tokenizer, ids, stop=[stop])
    assert (found, at) == (stop, i + span - 1)
    assert "".join(deltas) == CODE[: CODE.find(stop)]
    deltas, _, _ = run(tokenizer, ids, stop=[stop], include_stop_str_in_output=True)
    assert "".join(deltas) == CODE[: CODE.find(stop) + len(stop)]


def test_text_that_may_start_a_stop_string_is_held_then_flushed(tokenizer):
    text = "x = 1\nretur"
    ids = tokenizer.encode(text)
    detok = IncrementalDetokenizer(tokenizer, SamplingParams(stop=["return None"]))
    emitted = "".join(detok.push([t]).text for t in ids)
    assert emitted == "x = 1\n"  # "retur" could still become the stop string
    assert emitted + detok.flush() == text and detok.stop is None


def test_stop_string_that_completes_first_wins(tokenizer):
    ids = tokenizer.encode("say abcdef")
    deltas, found, _ = run(tokenizer, ids, stop=["abcdef", "cd", "bcd"])
    assert found == "bcd" and "".join(deltas) == "say a"  # "cd" and "bcd" end together; "bcd" starts first


def test_nothing_after_a_stop(tokenizer):
    detok = IncrementalDetokenizer(tokenizer, SamplingParams(stop=["b"]))
    assert detok.push(tokenizer.encode("ab")) == ("a", "b")
    assert detok.push(tokenizer.encode("cd")) == ("", None)
    assert detok.flush() == "" and detok.text == "a" and detok.stop == "b"


def test_multibyte_characters_split_over_tokens_are_emitted_whole(tokenizer):
    text = "naïve café: 3 € — 😀 ok"
    ids = tokenizer.encode(text)
    assert any("\ufffd" in p for p in pieces(tokenizer, ids))  # some token ends inside a character
    deltas, _, _ = run(tokenizer, ids)
    assert all("\ufffd" not in d for d in deltas) and "".join(deltas) == text


def test_stop_string_made_of_a_split_character(tokenizer):
    text = "price: 3 € each"
    deltas, found, _ = run(tokenizer, tokenizer.encode(text), stop=["€"])
    assert found == "€" and "".join(deltas) == "price: 3 "


def test_incomplete_character_at_the_end_becomes_a_replacement_character(tokenizer):
    ids = tokenizer.encode_bytes("ok €".encode()[:-1])
    deltas, _, _ = run(tokenizer, ids)
    assert deltas[-1] == "\ufffd" and "".join(deltas) == "ok \ufffd"


def test_special_tokens_skipped_or_kept(tokenizer):
    end = tokenizer.hf.token_to_id("<|im_end|>")
    ids = tokenizer.encode("hello") + [end] + tokenizer.encode(" world") + [tokenizer.eos_id]
    skipped, _, _ = run(tokenizer, ids)
    assert "".join(skipped) == "hello world"
    kept, _, _ = run(tokenizer, ids, skip_special_tokens=False)
    assert "".join(kept) == "hello<|im_end|> world<|endoftext|>"
    stopped, found, _ = run(tokenizer, ids, skip_special_tokens=False, stop=["<|im_end|>"])
    assert found == "<|im_end|>" and "".join(stopped) == "hello"


TEXTS = st.text(alphabet=st.sampled_from(list("ab c\n€é😀")), max_size=30)
STOPS = st.lists(st.text(alphabet=st.sampled_from(list("ab c€é")), min_size=1, max_size=4), max_size=3)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXTS, stops=STOPS, chunks=st.integers(1, 4), include=st.booleans())
def test_any_grouping_of_tokens_gives_the_text_decoded_at_once(tokenizer, text, stops, chunks, include):
    ids = tokenizer.encode(text)
    deltas, found, _ = run(tokenizer, ids, chunks=chunks, stop=stops, include_stop_str_in_output=include)
    assert ("".join(deltas), found) == reference(tokenizer, ids, stops, include)
