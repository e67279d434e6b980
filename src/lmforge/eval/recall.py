"""Multi-query associative recall (MQAR; Arora et al., "Zoology", arXiv 2312.04927).

A sequence lists key-value pairs, then asks for some of the keys again; the model must
answer each with its value. Fixed-state models (linear attention) must squeeze every
pair into their state, which is where they fall behind softmax attention.
"""

from __future__ import annotations

import torch

IGNORE = -100


def mqar_batch(batch: int, pairs: int, vocab: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs [B, 3 * pairs] and targets (IGNORE except where a value must be recalled).

    Layout: k1 v1 k2 v2 ... kn vn, then q1 q2 ... qn, every key asked once in a random order; the
    target at each q is its value. As in Zoology, the answers are targets only, never inputs: were
    they fed back (q1 a1 q2 a2 ...), the last answers could be had by elimination (the values not
    yet given), a shortcut a model learns before it learns to recall.
    Keys come from the lower half of the vocabulary, values from the upper half.
    """
    half = vocab // 2
    if pairs > half:
        raise ValueError(f"{pairs} distinct keys need a vocabulary of at least {2 * pairs}")
    keys = torch.stack([torch.randperm(half, generator=generator)[:pairs] for _ in range(batch)])
    values = torch.randint(half, vocab, (batch, pairs), generator=generator)
    order = torch.stack([torch.randperm(pairs, generator=generator) for _ in range(batch)])
    asked, answers = keys.gather(1, order), values.gather(1, order)
    context = torch.stack([keys, values], dim=2).reshape(batch, 2 * pairs)
    tokens = torch.cat([context, asked], dim=1)
    targets = torch.full_like(tokens, IGNORE)
    targets[:, 2 * pairs :] = answers
    return tokens, targets


@torch.no_grad()
def mqar_accuracy(model, tokens: torch.Tensor, targets: torch.Tensor) -> float:
    """Share of recall positions where the model's most likely next token is the right value."""
    was_training = model.training
    model.eval()
    predictions = model(tokens).argmax(-1)
    model.train(was_training)
    asked = targets != IGNORE
    return float((predictions[asked] == targets[asked]).float().mean())
