"""Calibration sequences: token windows drawn from text the evaluation does not use.

The default set, "mixed", holds equal shares of two domains every machine with Python has:
code (the standard library's source outside the validation split that `lmforge eval
perplexity` scores by default) and English prose (the pydoc topics). A calibration set
of one domain fits GPTQ's and AWQ's corrections to that domain's activations; a general
model is used on more than one.
"""

from __future__ import annotations

import random
from typing import Callable

import torch

from lmforge.config import DataConfig
from lmforge.data.document import Document
from lmforge.data.readers import read_corpus
from lmforge.data.split import choose_validation
from lmforge.errors import DataError
from lmforge.quant import DEFAULT_CALIBRATION, DEFAULT_WINDOW_LEN, DEFAULT_WINDOWS
from lmforge.tokenizer import Tokenizer

CHARS_PER_WINDOW_TOKEN = 16  # documents sampled per source: about 4x the text the windows need


def calibration_windows(tokenizer: Tokenizer, texts: list[str], n_seqs: int = DEFAULT_WINDOWS,
                        seq_len: int = DEFAULT_WINDOW_LEN, seed: int = 0,
                        log: Callable[[str], None] = print) -> torch.Tensor:
    """`n_seqs` windows of `seq_len` tokens [n, T] at seed-random offsets of the documents' token stream.

    When the texts hold fewer tokens than asked, say so and use what exists: as many
    non-overlapping windows as fit, or one shorter window.
    """
    stream = torch.tensor(tokenizer.encode_documents(texts), dtype=torch.long)
    if len(stream) < 2:
        raise DataError("the calibration data holds no tokens; give a corpus with text in it")
    if len(stream) < n_seqs * seq_len:
        fit = len(stream) // seq_len
        if fit == 0:
            log(f"calibration data has {len(stream)} tokens, fewer than one window of {seq_len}; using one window of {len(stream)}")
            return stream[None]
        log(f"calibration data has {len(stream):,} tokens, fewer than {n_seqs} x {seq_len}; using {fit} windows")
        return stream[: fit * seq_len].view(fit, seq_len)
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(stream) - seq_len + 1, (n_seqs,), generator=g)
    return torch.stack([stream[s: s + seq_len] for s in starts.tolist()])


def stdlib_training_documents() -> list[Document]:
    """The standard library's documents outside the validation split `prepare` and `eval perplexity` hold out."""
    docs = list(read_corpus("stdlib"))
    val = choose_validation([(d.id, len(d.text.encode("utf-8"))) for d in docs], DataConfig.val_bytes)
    return [d for d in docs if d.id not in val]


def calibration_sources(spec: str = DEFAULT_CALIBRATION) -> dict[str, list[str]]:
    """The texts of a calibration spec by source: "mixed" (stdlib code outside the evaluation split, and
    pydoc prose), "stdlib" (its code outside the evaluation split), or any corpus spec `read_corpus` takes."""
    if spec == "mixed":
        return {"code": [d.text for d in stdlib_training_documents()], "prose": [d.text for d in read_corpus("pydoc")]}
    docs = stdlib_training_documents() if spec == "stdlib" else list(read_corpus(spec))
    texts = [d.text for d in docs if d.text]
    if not texts:
        raise DataError(f"calibration corpus {spec!r} holds no text")
    return {spec: texts}


def sample_texts(texts: list[str], n_chars: int, seed: int) -> list[str]:
    """Seed-random documents of `texts` until they hold `n_chars` characters (all of them if fewer)."""
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    chosen, held = [], 0
    for i in order:
        if held >= n_chars:
            break
        chosen.append(texts[i])
        held += len(texts[i])
    return chosen


def calibration_set(tokenizer: Tokenizer, spec: str = DEFAULT_CALIBRATION, n_seqs: int = DEFAULT_WINDOWS,
                    seq_len: int = DEFAULT_WINDOW_LEN, seed: int = 0, log: Callable[[str], None] = print) -> torch.Tensor:
    """Calibration windows [n, T] of a spec (see `calibration_sources`): equal shares of the `n_seqs` windows
    from each source, drawn from a seed-random sample of its documents."""
    sources = calibration_sources(spec)
    parts = []
    for i, texts in enumerate(sources.values()):
        share = n_seqs // len(sources) + (i < n_seqs % len(sources))
        if share:
            sample = sample_texts(texts, share * seq_len * CHARS_PER_WINDOW_TOKEN, seed)
            parts.append(calibration_windows(tokenizer, sample, share, seq_len, seed, log))
    length = min(p.shape[1] for p in parts)
    return torch.cat([p[:, :length] for p in parts])
