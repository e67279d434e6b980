"""Loss, perplexity and bits per byte of a model on token windows or raw texts."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from lmforge.config import DataConfig
from lmforge.data.loader import eval_windows
from lmforge.data.readers import read_corpus
from lmforge.data.split import choose_validation
from lmforge.errors import DataError
from lmforge.model.transformer import Transformer
from lmforge.tokenizer import Tokenizer


@torch.no_grad()
def evaluate(
    model: Transformer,
    windows: list[torch.Tensor],
    token_bytes: np.ndarray,
    batch_size: int = 16,
    autocast=contextlib.nullcontext,
) -> dict[str, float]:
    """Mean next-token loss (nats), perplexity and bits per byte over `windows`.

    Bits per byte = total negative log-likelihood in bits / UTF-8 bytes of the predicted
    tokens, so it is comparable across tokenizers and with byte-level compressors.
    """
    return summarize_nll(*nll_sums(model, windows, token_bytes, batch_size, autocast))


def window_batches(windows: list[torch.Tensor], batch_size: int) -> list[torch.Tensor]:
    """Consecutive windows stacked into batches of up to `batch_size` windows of one length."""
    batches, i = [], 0
    while i < len(windows):
        j = i
        while j < len(windows) and j - i < batch_size and len(windows[j]) == len(windows[i]):
            j += 1
        batches.append(torch.stack(windows[i:j]))
        i = j
    return batches


def nll_sums(
    model: Transformer,
    windows: list[torch.Tensor],
    token_bytes: np.ndarray,
    batch_size: int = 16,
    autocast=contextlib.nullcontext,
    forward_calls: int = 0,
) -> tuple[float, int, int]:
    """(total negative log-likelihood in nats, predicted tokens, their UTF-8 bytes) over `windows`: sums, so
    ranks that each score some of the windows add theirs up. With `forward_calls`, the model runs at least
    that many forward passes (the extra ones on a one-token input, not counted): the ranks of a sharded
    model must make the same number of calls."""
    batches = [(b[:, :-1], b[:, 1:]) for b in window_batches(windows, batch_size)]
    return target_nll_sums(model, batches, token_bytes, autocast, forward_calls)


@torch.no_grad()
def target_nll_sums(
    model: Transformer,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    token_bytes: np.ndarray,
    autocast=contextlib.nullcontext,
    forward_calls: int = 0,
) -> tuple[float, int, int]:
    """`nll_sums` over batches of (inputs, targets) whose targets may be IGNORE (-100, not scored)."""
    was_training = model.training
    model.eval()
    device = model.embed.weight.device
    nll, tokens, n_bytes = 0.0, 0, 0
    for x, y in batches:
        scored = y != -100
        with autocast():
            loss = model(x.to(device), targets=y.to(device))
        count = int(scored.sum())
        nll += float(loss) * count
        tokens += count
        n_bytes += int(token_bytes[y[scored].numpy()].sum())
    for _ in range(forward_calls - len(batches)):
        with autocast():
            model(torch.zeros(1, 1, dtype=torch.long, device=device))
    model.train(was_training)
    return nll, tokens, n_bytes


def summarize_nll(nll: float, tokens: int, n_bytes: int) -> dict[str, float]:
    """Mean loss, perplexity and bits per byte from `nll_sums`."""
    mean = nll / tokens
    return {"loss": mean, "ppl": math.exp(mean), "bpb": nll / math.log(2) / max(n_bytes, 1), "tokens": int(tokens)}


def evaluation_texts(data: str, val_bytes: int = DataConfig.val_bytes) -> list[str]:
    """Texts to evaluate on: for "stdlib", its validation split (the one `prepare` holds out);
    otherwise every document of the corpus spec (a file, directory, glob or "pydoc")."""
    docs = list(read_corpus(data))
    if data == "stdlib":
        val = choose_validation([(d.id, len(d.text.encode("utf-8"))) for d in docs], val_bytes)
        docs = [d for d in docs if d.id in val]
    texts = [d.text for d in docs if d.text]
    if not texts:
        raise DataError(f"{data!r} holds no text to evaluate on")
    return texts


def perplexity(
    model: Transformer,
    tokenizer: Tokenizer,
    texts: list[str],
    seq_len: int = 512,
    max_tokens: int = 0,
    batch_size: int = 8,
    autocast=contextlib.nullcontext,
) -> dict[str, float]:
    """Perplexity and bits per byte of `model` on raw texts, tokenized with its own tokenizer.

    Each text is encoded (after BOS when the tokenizer adds one) and ended with end-of-text;
    the stream is scored in windows of `seq_len` (capped at the model's context).
    """
    seq_len = min(seq_len, model.cfg.max_seq_len - 1)
    windows = eval_windows(np.asarray(tokenizer.encode_documents(texts), dtype=np.int64), seq_len, max_tokens)
    return evaluate(model, windows, tokenizer.token_byte_lengths(), batch_size, autocast)
