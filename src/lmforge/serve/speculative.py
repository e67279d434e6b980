"""Speculative decoding: cheap drafts of a sequence's next tokens, checked by the target model in one forward.

Leviathan, Kalman & Matias, "Fast Inference from Transformers via Speculative Decoding" (arXiv
2211.17192), and Chen et al., "Accelerating Large Language Model Decoding with Speculative Sampling"
(arXiv 2302.01318): a draft proposes d tokens with probabilities q; the target computes its
distributions p at all d + 1 positions in one forward; draft j is accepted with probability
min(1, p_j(t_j) / q_j(t_j)), the first rejected one is replaced by a draw from the normalised
max(p_j - q_j, 0), and when all d are accepted a (d+1)-th token is drawn from p_d. The output is
distributed exactly as sampling from the target token by token. A greedy row accepts a draft when it
is the target's argmax, so its output is the target's greedy output. p is the distribution the
sampler would draw from (penalties, grammar mask, temperature, top-k/p/min-p, all applied as if the
earlier drafts had been sampled), so every sampling setting keeps its meaning.

Drafts come from prompt lookup (`propose_ngram`; Saxena, "Prompt Lookup Decoding", 2023, vLLM's
`ngram` method: the tokens that followed the latest earlier occurrence of the sequence's last n
tokens, a one-hot q, free to compute) or from a small draft model sharing the tokenizer
(`lmforge.serve.draft`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lmforge.config import bounded, check_ranges
from lmforge.errors import ConfigError
from lmforge.serve.sampler import inverse_cdf

METHODS = ("ngram", "draft")


@dataclass
class SpeculativeConfig:
    """How drafts are made: by prompt lookup ("ngram") or by a draft model ("draft"), `num_tokens` per step."""

    method: str = "ngram"
    num_tokens: int = bounded(4, 1, 16)  # drafts per sequence per step
    min_ngram: int = bounded(2, 1)  # prompt lookup: the shortest suffix matched
    max_ngram: int = bounded(4, 1)  # ... and the longest, tried first

    def __post_init__(self) -> None:
        check_ranges(self, error=ConfigError)
        if self.method not in METHODS:
            raise ConfigError(f"unknown speculative method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.min_ngram > self.max_ngram:
            raise ConfigError(f"min_ngram {self.min_ngram} is above max_ngram {self.max_ngram}")


class PromptLookup:
    """The drafter of the "ngram" method: `propose(seqs, rooms)` gives each sequence up to rooms[i] drafts."""

    def __init__(self, config: SpeculativeConfig):
        self.min_n, self.max_n = config.min_ngram, config.max_ngram

    def propose(self, seqs: list, rooms: list[int]) -> list[tuple[list[int], None]]:
        """Each sequence's drafts, all certain (q one-hot: None)."""
        return [(propose_ngram(seq.token_ids, room, self.min_n, self.max_n), None) for seq, room in zip(seqs, rooms)]


def propose_ngram(tokens: list[int], k: int, min_n: int, max_n: int) -> list[int]:
    """Up to k tokens that followed the latest earlier occurrence of the last n tokens, for the longest n in
    [min_n, max_n] that occurs; [] when none does. Vectorised over windows (O(length x n) per call)."""
    arr = np.asarray(tokens, dtype=np.int64)
    length = len(arr)
    for n in range(min(max_n, length - 1), min_n - 1, -1):
        windows = np.lib.stride_tricks.sliding_window_view(arr[: length - 1], n)  # each has a token after it
        hits = np.flatnonzero((windows == arr[length - n:]).all(axis=1))
        if len(hits):
            start = int(hits[-1]) + n
            return arr[start: start + k].tolist()
    return []


def propose_ngram_reference(tokens: list[int], k: int, min_n: int, max_n: int) -> list[int]:
    """`propose_ngram` by plain loops; the reference the tests compare against."""
    for n in range(max_n, min_n - 1, -1):
        if n >= len(tokens):
            continue
        suffix = tokens[-n:]
        for i in range(len(tokens) - n - 1, -1, -1):
            if tokens[i: i + n] == suffix:
                return tokens[i + n: i + n + k]
    return []


def verify(target: torch.Tensor, drafts: list[int], draft_probs: torch.Tensor | None, greedy: bool,
           generator: torch.Generator) -> tuple[int, int]:
    """(how many drafts the target accepts, the token that follows them).

    target [d+1, V]: per position, the processed logits of a greedy row or the probabilities a sampled row
    draws from; draft_probs [d, V] the draft's q (None: each draft was certain, a one-hot q). Sampled rows
    take one uniform number per decision from the sequence's generator.
    """
    if greedy:
        best = target.argmax(dim=-1).tolist()
        accepted = next((j for j, t in enumerate(drafts) if best[j] != t), len(drafts))
        return accepted, best[accepted]
    for j, token in enumerate(drafts):
        p = target[j]
        q = None if draft_probs is None else draft_probs[j].to(p.dtype)
        u = torch.rand((), generator=generator, device=p.device, dtype=p.dtype)
        if u * (1.0 if q is None else q[token]) < p[token]:  # accepted with probability min(1, p / q)
            continue
        residual = p.index_fill(0, torch.tensor(token, device=p.device), 0.0) if q is None else (p - q).clamp_(min=0)
        return j, _draw(residual, generator)
    return len(drafts), _draw(target[-1], generator)


def _draw(probs: torch.Tensor, generator: torch.Generator) -> int:
    u = torch.rand(1, generator=generator, device=probs.device, dtype=probs.dtype)
    return int(inverse_cdf(probs[None], u)[0])


def verify_reference(target: torch.Tensor, drafts: list[int], draft_probs: torch.Tensor | None, greedy: bool,
                     uniforms: list[float]) -> tuple[int, int]:
    """`verify` in float64 with the uniform numbers given, for the tests: the same decisions from the same draws."""
    target = target.double()
    if greedy:
        best = [int(row.argmax()) for row in target]
        accepted = next((j for j, t in enumerate(drafts) if best[j] != t), len(drafts))
        return accepted, best[accepted]
    draws = iter(uniforms)

    def draw(probs: torch.Tensor) -> int:
        u, total, mass = next(draws), float(probs.sum()), 0.0
        for token, p in enumerate(probs.tolist()):
            mass += p
            if mass > u * total:
                return token
        return len(probs) - 1

    for j, token in enumerate(drafts):
        p = target[j]
        q = torch.zeros_like(p).index_fill_(0, torch.tensor(token), 1.0) if draft_probs is None else draft_probs[j].double()
        if next(draws) * q[token] < p[token]:
            continue
        return j, draw((p - q).clamp(min=0))
    return len(drafts), draw(target[-1])
