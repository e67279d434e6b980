"""Byte-level BPE tokenizer (Hugging Face `tokenizers`): train, save, load, exact round trips.

Byte-level BPE (Radford et al., GPT-2) maps every byte to one of 256 base symbols, so any
byte string is encodable and `decode_bytes(encode_bytes(b)) == b` holds even for bytes
that are not valid UTF-8.
"""

from __future__ import annotations

import codecs
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import numpy as np
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from lmforge.errors import CheckpointError
from lmforge.fileio import atomic_path

BOS, EOS, PAD = "<|bos|>", "<|endoftext|>", "<|pad|>"
_ESCAPED_BYTE = re.compile("([\udc80-\udcff])")


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


class Tokenizer:
    """A byte-level BPE tokenizer with bos/eos/pad special tokens and byte-exact decoding."""

    def __init__(self, hf: HFTokenizer):
        self.hf = hf
        self.vocab_size = hf.get_vocab_size(with_added_tokens=True)
        self.bos_id = hf.token_to_id(BOS)
        self.eos_id = hf.token_to_id(EOS)
        self.pad_id = hf.token_to_id(PAD)
        unicode_to_byte = {c: b for b, c in byte_to_unicode().items()}
        special = {t.content for t in hf.get_added_tokens_decoder().values()}
        table: list[bytes] = [b""] * self.vocab_size
        for token, idx in hf.get_vocab(with_added_tokens=True).items():
            if token in special:
                table[idx] = token.encode("utf-8")
            else:
                table[idx] = bytes(unicode_to_byte[c] for c in token)
        self._id_to_bytes = table
        self._special_ids = {hf.token_to_id(t) for t in special}

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 8192) -> "Tokenizer":
        """Learn BPE merges on `texts` until the vocabulary (with 3 special tokens) has `vocab_size` entries."""
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOS, BOS, PAD],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        hf.train_from_iterator(texts, trainer=trainer)
        return cls(hf)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tokenizer":
        """Read a `tokenizer.json` file."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"tokenizer file {path} not found; run `lmforge prepare` or pass a checkpoint that has one")
        try:
            return cls(HFTokenizer.from_file(str(path)))
        except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
            raise CheckpointError(f"{path} is not a valid tokenizer.json ({e}); re-create it with `lmforge prepare`") from None

    def save(self, path: str | os.PathLike) -> None:
        """Atomically write `tokenizer.json`."""
        with atomic_path(path) as tmp:
            self.hf.save(str(tmp))

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (no special tokens added)."""
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of many texts, encoded in parallel by the Rust backend."""
        return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def encode_bytes(self, data: bytes) -> list[int]:
        """Token ids of arbitrary bytes: valid UTF-8 runs as text, other bytes as byte tokens."""
        symbols = byte_to_unicode()
        ids: list[int] = []
        for i, piece in enumerate(_ESCAPED_BYTE.split(data.decode("utf-8", errors="surrogateescape"))):
            if i % 2:  # a lone byte that is not part of valid UTF-8
                ids.append(self.hf.token_to_id(symbols[ord(piece) - 0xDC00]))
            elif piece:
                ids.extend(self.encode(piece))
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The exact bytes the ids stand for."""
        return b"".join(self._id_to_bytes[i] for i in ids)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of the ids; byte sequences that are not valid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def token_byte_lengths(self) -> np.ndarray:
        """Bytes of text per token id (0 for special tokens), for bits-per-byte."""
        lengths = np.array([len(b) for b in self._id_to_bytes], dtype=np.int64)
        lengths[list(self._special_ids)] = 0
        return lengths

    def stream_decoder(self) -> "StreamDecoder":
        """An incremental decoder that emits text only once its UTF-8 bytes are complete."""
        return StreamDecoder(self)


class StreamDecoder:
    """Turns ids into text piece by piece, holding back incomplete UTF-8 sequences."""

    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, ids: Iterable[int]) -> str:
        """Text that became complete with these ids."""
        return self._utf8.decode(self._tokenizer.decode_bytes(ids))

    def flush(self) -> str:
        """Whatever is left at the end (incomplete bytes become U+FFFD)."""
        return self._utf8.decode(b"", final=True)

