"""Tokenizers on Hugging Face `tokenizers`: train byte-level BPE, save, load, exact round trips.

Byte-level BPE (Radford et al., GPT-2) maps every byte to one of 256 base symbols, so any
byte string is encodable and `decode_bytes(encode_bytes(b)) == b` holds even for bytes
that are not valid UTF-8. Tokenizers loaded from other tools (Hugging Face directories,
GGUF files) keep their own special tokens, BOS convention and chat template; SentencePiece-
style vocabularies with byte fallback (`▁` for spaces, `<0xNN>` byte tokens) decode exactly too.
"""

from __future__ import annotations

import codecs
import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import numpy as np
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from lmforge.errors import CheckpointError
from lmforge.fileio import atomic_path, write_json

BOS, EOS, PAD = "<|bos|>", "<|endoftext|>", "<|pad|>"
TOKENIZER_FILE, TOKENIZER_CONFIG_FILE = "tokenizer.json", "tokenizer_config.json"
_ESCAPED_BYTE = re.compile("([\udc80-\udcff])")
_SPM_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


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


@lru_cache(maxsize=1)
def unicode_to_byte() -> dict[str, int]:
    """Inverse of `byte_to_unicode`."""
    return {c: b for b, c in byte_to_unicode().items()}


def is_byte_level(hf: HFTokenizer) -> bool:
    """Whether the tokenizer spells tokens in GPT-2's byte alphabet (else SentencePiece style)."""
    return "ByteLevel" in json.dumps(json.loads(hf.to_str()).get("decoder"))


class Tokenizer:
    """A BPE tokenizer with its special-token ids, BOS convention, chat template and byte-exact decoding."""

    def __init__(
        self,
        hf: HFTokenizer,
        bos_id: int | None = None,
        eos_id: int | None = None,
        pad_id: int | None = None,
        add_bos: bool = False,
        chat_template: str | None = None,
    ):
        self.hf = hf
        self.vocab_size = hf.get_vocab_size(with_added_tokens=True)
        self.bos_id = bos_id if bos_id is not None else hf.token_to_id(BOS)
        self.eos_id = eos_id if eos_id is not None else hf.token_to_id(EOS)
        self.pad_id = pad_id if pad_id is not None else hf.token_to_id(PAD)
        self.add_bos = add_bos
        self.chat_template = chat_template
        special = {t.content for t in hf.get_added_tokens_decoder().values() if t.special}
        self._byte_level = is_byte_level(hf)
        table: list[bytes] = [b""] * self.vocab_size
        for token, idx in hf.get_vocab(with_added_tokens=True).items():
            table[idx] = token.encode("utf-8") if token in special else self._token_bytes(token)
        self._id_to_bytes = table
        self._special_ids = {hf.token_to_id(t) for t in special}

    def _token_bytes(self, token: str) -> bytes:
        if self._byte_level:
            symbols = unicode_to_byte()
            if all(c in symbols for c in token):
                return bytes(symbols[c] for c in token)
            return token.encode("utf-8")  # an added (non-special) token spelled in plain text
        m = _SPM_BYTE.fullmatch(token)
        return bytes([int(m.group(1), 16)]) if m else token.replace("▁", " ").encode("utf-8")

    def _byte_token(self, byte: int) -> int:
        token = byte_to_unicode()[byte] if self._byte_level else f"<0x{byte:02X}>"
        idx = self.hf.token_to_id(token)
        if idx is None:
            raise ValueError(f"the vocabulary has no token for byte 0x{byte:02X}")
        return idx

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 8192) -> "Tokenizer":
        """Learn byte-level BPE merges on `texts` until the vocabulary (with 3 special tokens) has `vocab_size` entries."""
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
        """Read `tokenizer.json` (a directory or the file), with `tokenizer_config.json` beside it if present."""
        path = Path(path)
        file = path / TOKENIZER_FILE if path.is_dir() else path
        if not file.is_file():
            raise CheckpointError(f"tokenizer file {file} not found; run `lmforge prepare` or pass a checkpoint that has one")
        try:
            hf = HFTokenizer.from_file(str(file))
        except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
            raise CheckpointError(f"{file} is not a valid tokenizer.json ({e}); re-create it with `lmforge prepare`") from None
        config_file = file.parent / TOKENIZER_CONFIG_FILE
        if not config_file.is_file():
            return cls(hf)
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{config_file} is not valid JSON ({e})") from None

        def token_id(key: str) -> int | None:
            token = config.get(key)
            token = token.get("content") if isinstance(token, dict) else token
            return hf.token_to_id(token) if isinstance(token, str) else None

        bos = token_id("bos_token")
        add_bos = config.get("add_bos_token")
        if add_bos is None:  # Llama-style tokenizers add BOS in their post-processor
            with_special = hf.encode("a", add_special_tokens=True).ids
            add_bos = bos is not None and len(with_special) > 1 and with_special[0] == bos
        template = config.get("chat_template")
        if isinstance(template, list):  # named templates: take the default one
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        return cls(hf, bos, token_id("eos_token"), token_id("pad_token"), bool(add_bos), template)

    def save(self, directory: str | os.PathLike) -> None:
        """Atomically write `tokenizer.json` and a Hugging Face `tokenizer_config.json` into `directory`."""
        directory = Path(directory)
        with atomic_path(directory / TOKENIZER_FILE) as tmp:
            self.hf.save(str(tmp))
        token = lambda i: None if i is None else self.hf.id_to_token(i)  # noqa: E731
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": token(self.bos_id),
            "eos_token": token(self.eos_id),
            "pad_token": token(self.pad_id),
            "add_bos_token": self.add_bos,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
        }
        if self.chat_template:
            config["chat_template"] = self.chat_template
        write_json(directory / TOKENIZER_CONFIG_FILE, config)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (special-token strings in it become their ids; no BOS added)."""
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of many texts, encoded in parallel by the Rust backend."""
        return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def encode_documents(self, texts: list[str]) -> list[int]:
        """One token stream of whole documents: each after BOS (when the tokenizer adds one), ended by end-of-text."""
        stream: list[int] = []
        for ids in self.encode_batch(texts):
            stream += ([self.bos_id] if self.add_bos else []) + ids + [self.eos_id]
        return stream

    def encode_bytes(self, data: bytes) -> list[int]:
        """Token ids of arbitrary bytes: valid UTF-8 runs as text, other bytes as byte tokens."""
        ids: list[int] = []
        for i, piece in enumerate(_ESCAPED_BYTE.split(data.decode("utf-8", errors="surrogateescape"))):
            if i % 2:  # a lone byte that is not part of valid UTF-8
                ids.append(self._byte_token(ord(piece) - 0xDC00))
            elif piece:
                ids.extend(self.encode(piece))
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The exact bytes the ids stand for."""
        return b"".join(self._id_to_bytes[i] for i in ids)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of the ids; byte sequences that are not valid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def is_special(self, token_id: int) -> bool:
        """Whether the id is a special (control) token such as end-of-text."""
        return token_id in self._special_ids

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
