import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.data.readers import read_stdlib
from lmforge.errors import CheckpointError
from lmforge.tokenizer import BOS, EOS, PAD, Tokenizer


@pytest.fixture(scope="module")
def tok():
    texts = [doc.text for _, doc in zip(range(30), read_stdlib())]
    texts += ["def f(x):\n    return x + 1\n", "héllo wörld — ünïcode ✓ 日本語\n"] * 10
    return Tokenizer.train(texts, vocab_size=400)


def test_vocab_and_special_tokens(tok):
    assert tok.vocab_size == 400
    assert len({tok.bos_id, tok.eos_id, tok.pad_id}) == 3
    assert tok.decode_bytes([tok.eos_id]) == EOS.encode()
    assert tok.hf.token_to_id(BOS) == tok.bos_id and tok.hf.token_to_id(PAD) == tok.pad_id


def test_merges_compress_training_text(tok):
    text = "def f(x):\n    return x + 1\n"
    assert len(tok.encode(text)) < len(text.encode()) * 0.6


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_text_round_trip(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode_bytes(ids) == text.encode("utf-8")


@settings(max_examples=300, deadline=None)
@given(st.binary())
def test_bytes_round_trip_including_invalid_utf8(tok, data):
    ids = tok.encode_bytes(data)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode_bytes(ids) == data


def test_stream_decoder_holds_back_partial_utf8(tok):
    data = "ü✓日".encode()
    ids = tok.encode_bytes(data[:1]) + tok.encode_bytes(data[1:])  # split inside a character
    stream = tok.stream_decoder()
    pieces = [stream.push([i]) for i in ids] + [stream.flush()]
    assert "".join(pieces) == "ü✓日"
    assert "\ufffd" not in "".join(pieces)


def test_save_load_identical(tok, tmp_path):
    tok.save(tmp_path)
    again = Tokenizer.load(tmp_path)
    text = "def g(y): return y * 2  # ✓"
    assert again.encode(text) == tok.encode(text) and again.vocab_size == tok.vocab_size


def test_byte_lengths_sum_to_text_bytes(tok):
    text = "naïve café\n" * 3
    ids = tok.encode(text) + [tok.eos_id]
    assert tok.token_byte_lengths()[ids].sum() == len(text.encode())


def test_load_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        Tokenizer.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not a valid tokenizer"):
        Tokenizer.load(tmp_path / "bad.json")
