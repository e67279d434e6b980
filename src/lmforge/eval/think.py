"""Think@n over many prompts (Chen et al., "Think Deep, Not Just Long", arXiv 2602.13517): every prompt's n
samples run through the engine together under a rule of `lmforge.serve.think`, which stops the rejected samples
inside the engine; the kept samples' extracted answers vote. Cost is every generated token, the rejected samples'
prefixes included.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Callable

from lmforge.eval.dtr import SIGNAL_NAMES
from lmforge.eval.tasks import extract_answer
from lmforge.serve.engine import LLMEngine
from lmforge.serve.params import SamplingParams
from lmforge.serve.think import decide


@dataclass
class Sample:
    """One of the n samples: its text, tokens generated, whether it voted, its prefix score, answer and (when
    measured) its DTR, mean log-probability and self-certainty over all its tokens, and each token's
    (deep, logprob, certainty)."""

    index: int
    text: str = ""
    tokens: int = 0
    finish_reason: str | None = None
    kept: bool = True
    score: float | None = None
    answer: object = None
    dtr: float | None = None
    logprob: float | None = None
    certainty: float | None = None
    token_signals: list[tuple[bool, float, float]] | None = None


@dataclass
class Vote:
    """The outcome for one prompt: the majority answer of the kept samples and what it cost."""

    answer: object
    samples: list[Sample] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        """Every generated token, rejected prefixes included."""
        return sum(s.tokens for s in self.samples)


def majority(answers: list) -> object:
    """The most frequent of the answers that are not None (ties: the first to appear); None if there are none."""
    votes = Counter(a for a in answers if a is not None)
    return votes.most_common(1)[0][0] if votes else None


def think_at_n(engine: LLMEngine, prompts: list[list[int]], params: SamplingParams,
               extract: Callable[[str], object] = extract_answer,
               progress: Callable[[int], None] | None = None) -> list[Vote]:
    """Run every prompt's `params.n` samples under the rule `params.think` (None or "all": no rejection);
    one Vote per prompt. `progress` is called with the number of tokens each engine step generated."""
    samples = {f"think-{i}": [Sample(k) for k in range(params.n)] for i in range(len(prompts))}
    for request_id, prompt in zip(samples, prompts):
        engine.add_request(request_id, prompt, params)
    while engine.has_unfinished():
        deltas = engine.step()
        for delta in deltas:
            s = samples[delta.request_id][delta.index]
            s.text += delta.text
            s.tokens += len(delta.token_ids)
            if delta.finish_reason is not None:
                s.finish_reason, s.kept = delta.finish_reason, delta.kept is not False
                s.score, s.token_signals, signals = delta.score, delta.token_signals, delta.signals or {}
                s.dtr, s.logprob, s.certainty = (signals.get(name) for name in SIGNAL_NAMES)
        if progress:
            progress(sum(len(d.token_ids) for d in deltas))
    return [tally(request_samples, extract) for request_samples in samples.values()]


def tally(samples: list[Sample], extract: Callable[[str], object] = extract_answer) -> Vote:
    """The vote of one prompt's finished samples: each kept sample's answer extracted from its text, then the
    majority of those answers."""
    for s in samples:
        s.answer = extract(s.text) if s.kept else None
    return Vote(majority([s.answer for s in samples if s.kept]), samples)


@dataclass
class Snapshot:
    """A sample as the engine sees it when its request's rule decides."""

    index: int
    finished: bool
    num_output_tokens: int


def replay(samples: list[Sample], rule: str, keep: float, prefix: int) -> Vote:
    """Think@n applied after the fact to n samples generated in full without rejection (with the per-token
    signals): the vote and cost the engine's rule gives the same samples, which it generates alike under the
    same seed (each sample draws from its own generator), so one generation serves every rule and every n up to
    its own. The request's samples advance together, one token a step: a scoring rule decides when all have
    `prefix` tokens or have finished, `length` when keep x n have finished, and a stopped sample has spent the
    tokens it had then."""
    n_keep = max(1, math.ceil(keep * len(samples)))
    lengths = sorted(s.tokens for s in samples)
    moment = {"all": math.inf, "length": lengths[n_keep - 1]}.get(rule, prefix)
    snapshots = [Snapshot(i, s.tokens <= moment, min(s.tokens, moment)) for i, s in enumerate(samples)]
    decision = decide(rule, n_keep, snapshots, prefix, lambda snap: samples[snap.index].token_signals)
    voted = [replace(s, kept=i not in decision.rejected, score=decision.scores.get(i),
                     tokens=s.tokens if i not in decision.rejected else min(s.tokens, moment))
             for i, s in enumerate(samples)]
    return Vote(majority([s.answer for s in voted if s.kept]), voted)
