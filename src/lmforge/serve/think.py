"""Think@n inside the engine (Chen et al., "Think Deep, Not Just Long", arXiv 2602.13517): a request's n samples
share the prompt's blocks; once every sample has `think_prefix` tokens (or has finished) each is scored on that
prefix, the lowest (1 - think_keep) share are stopped and their memory freed at once, and the rest finish.

Rules (the score of a sample, higher kept):
  dtr        the prefix's Deep-Thinking Ratio
  logprob    the prefix's mean log-probability of the sampled tokens
  certainty  the prefix's mean self-certainty, KL(uniform || p) (Kang et al., arXiv 2502.18581)
  length     no score: the first keep x n samples to finish are kept, the others stopped then (Hassid et al.,
             "Don't Overthink It", arXiv 2505.17813)
  all        no rejection (self-consistency's vote over all n; Wang et al., arXiv 2203.11171)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from lmforge.eval.dtr import SIGNAL_NAMES, mean_signals

RULES = ("dtr", "logprob", "certainty", "length", "all")
SCORED = SIGNAL_NAMES  # the rules that score samples by the meter's per-token signals


def prefix_score(signals: list[tuple[bool, float, float]], rule: str, prefix: int | None = None) -> float:
    """The mean of the rule's per-token signal over the first `prefix` tokens (all with None); -inf if none."""
    means = mean_signals(signals[:prefix])
    return means[rule] if means else -math.inf


@dataclass
class Decision:
    """A rule's verdict on a request's samples: the indices it stops, and each sample's prefix score (none for
    rules without one)."""

    rejected: set[int] = field(default_factory=set)
    scores: dict[int, float] = field(default_factory=dict)


def decide(rule: str, n_keep: int, seqs: list, prefix: int, signals: Callable[[object], list]) -> Decision | None:
    """The rule's decision once it can make one (None until then). `seqs` are the request's samples and
    `signals(seq)` the meter's per-token (deep, logprob, certainty) of one."""
    if rule == "all":
        return Decision()
    if rule == "length":
        if sum(s.finished for s in seqs) < n_keep:
            return None
        return Decision({s.index for s in seqs if not s.finished})
    if any(not s.finished and s.num_output_tokens < prefix for s in seqs):
        return None
    scores = {s.index: prefix_score(signals(s), rule, prefix) for s in seqs}
    return Decision(set(sorted(scores, key=lambda i: (-scores[i], i))[n_keep:]), scores)
