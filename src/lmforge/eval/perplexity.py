"""Validation loss, perplexity and bits per byte of a model on token windows."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from lmforge.model.transformer import Transformer


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
    was_training = model.training
    model.eval()
    device = model.embed.weight.device
    nll, tokens = 0.0, 0
    i = 0
    while i < len(windows):
        j = i
        while j < len(windows) and j - i < batch_size and len(windows[j]) == len(windows[i]):
            j += 1
        batch = torch.stack(windows[i:j]).to(device)
        with autocast():
            loss = model(batch[:, :-1], targets=batch[:, 1:])
        nll += float(loss) * batch[:, 1:].numel()
        tokens += batch[:, 1:].numel()
        i = j
    model.train(was_training)
    n_bytes = int(sum(token_bytes[w[1:].numpy()].sum() for w in windows))
    mean = nll / tokens
    return {"loss": mean, "ppl": math.exp(mean), "bpb": nll / math.log(2) / max(n_bytes, 1), "tokens": tokens}
