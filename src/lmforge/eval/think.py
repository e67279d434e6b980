"""Think@n: sample n answers, judge each by a short prefix, stop the weaker half early and vote among the rest
(Chen et al., "Think Deep, Not Just Long", arXiv 2602.13517: the prefix's Deep-Thinking Ratio is the judge).

Inside the engine the n samples share the prompt's cache blocks; after `prefix` generated tokens each sample is
scored, the lowest (1 - keep) share are aborted and their memory freed at once, and the survivors finish. The
rules compared at the same n:
  dtr        the prefix's Deep-Thinking Ratio (higher kept)
  logprob    the prefix's mean log-probability of the sampled tokens (higher kept)
  certainty  the prefix's mean self-certainty, KL(uniform || p) (Kang et al., arXiv 2502.18581; higher kept)
  length     the first keep x n samples to finish are kept, the rest stopped then (Hassid et al.,
             "Don't Overthink It", arXiv 2505.17813)
  all        no rejection: the vote of all n (self-consistency, Cons@n; Wang et al., arXiv 2203.11171)
Cost is every generated token, the rejected samples' prefixes included.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from lmforge.eval.dtr import DeepThinkingMeter
from lmforge.eval.tasks import extract_answer
from lmforge.serve.engine import LLMEngine
from lmforge.serve.params import SamplingParams

RULES = ("dtr", "logprob", "certainty", "length", "all")
SIGNAL = {"dtr": 0, "logprob": 1, "certainty": 2}  # position in the meter's per-token (deep, logprob, certainty)


@dataclass
class Sample:
    """One of the n samples: its text, tokens generated, extracted answer, prefix score, and whether it voted."""

    index: int
    text: str = ""
    tokens: int = 0
    finish_reason: str | None = None
    score: float | None = None
    kept: bool = True
    answer: object = None
    dtr: float | None = None  # over every generated token, when a meter watched: DTR, mean log-probability,
    logprob: float | None = None  # mean self-certainty
    certainty: float | None = None


@dataclass
class Vote:
    """The outcome for one prompt: the majority answer of the kept samples and what it cost."""

    answer: object
    samples: list[Sample] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        """Every generated token, rejected prefixes included."""
        return sum(s.tokens for s in self.samples)


def majority(samples: list[Sample]) -> object:
    """The most frequent answer among kept samples that gave one (ties: the first to appear); None if none did."""
    votes = Counter(s.answer for s in samples if s.kept and s.answer is not None)
    return votes.most_common(1)[0][0] if votes else None


def prefix_score(signals: list[tuple[bool, float, float]], rule: str, prefix: int) -> float:
    """The mean of the rule's per-token signal over the first `prefix` generated tokens."""
    values = [float(t[SIGNAL[rule]]) for t in signals[:prefix]]
    return sum(values) / len(values) if values else -math.inf


class _Request:
    def __init__(self, request, n: int):
        self.request, self.samples, self.decided = request, [Sample(i) for i in range(n)], False

    def ready_to_judge(self, prefix: int) -> bool:
        return all(s.finish_reason is not None or s.tokens >= prefix for s in self.samples)


def think_at_n(engine: LLMEngine, prompts: list[list[int]], params: SamplingParams, rule: str = "dtr",
               prefix: int = 50, keep: float = 0.5, extract: Callable[[str], object] = extract_answer,
               meter: DeepThinkingMeter | None = None, measure: bool = False,
               progress: Callable[[int], None] | None = None) -> list[Vote]:
    """Run every prompt's n samples together through `engine` under `rule`; one Vote per prompt.

    A meter watches the engine (as its observer) for the rules that read per-token signals, or for any rule
    with `measure`, which also gives each sample its whole-sequence DTR, log-probability and self-certainty;
    it is created here unless given. `progress` is called with the number of tokens each step generated.
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {', '.join(RULES)}")
    if not 0 < keep <= 1:
        raise ValueError(f"keep is the share of samples kept, in (0, 1]; got {keep}")
    watch = rule in SIGNAL or measure
    if watch:
        meter = meter or DeepThinkingMeter(engine.model)
        engine.observer = meter
    n_keep = max(1, math.ceil(keep * params.n))
    states = {f"think-{i}": _Request(engine.add_request(f"think-{i}", p, params), params.n) for i, p in enumerate(prompts)}
    try:
        while engine.has_unfinished():
            deltas = engine.step()
            for delta in deltas:
                sample = states[delta.request_id].samples[delta.index]
                sample.text += delta.text
                sample.tokens += len(delta.token_ids)
                sample.finish_reason = delta.finish_reason or sample.finish_reason
            if progress:
                progress(sum(len(d.token_ids) for d in deltas))
            for request_id, state in states.items():
                if not state.decided:
                    judge(engine, meter, request_id, state, rule, prefix, n_keep)
    finally:
        if watch:
            engine.observer = None
    votes = []
    for state in states.values():
        seqs = sorted(state.request.seqs, key=lambda q: q.index)
        for s, seq in zip(state.samples, seqs):
            s.answer = extract(s.text) if s.kept else None
            if watch and s.kept:
                signals = meter.signals(seq)
                s.dtr, s.logprob, s.certainty = (prefix_score(signals, r, len(signals)) for r in SIGNAL)
        if watch:
            meter.release(state.request.request_id, [seq.seq_id for seq in seqs])
        votes.append(Vote(majority(state.samples), state.samples))
    return votes


def judge(engine: LLMEngine, meter: DeepThinkingMeter | None, request_id: str, state: _Request, rule: str,
          prefix: int, n_keep: int) -> None:
    """Decide which samples go on once the rule can: abort the rest."""
    samples = state.samples
    if rule == "all":
        state.decided = True
        return
    if rule == "length":
        done = [s for s in samples if s.finish_reason is not None]
        if len(done) < n_keep:
            return
        rejected = [s for s in samples if s.finish_reason is None]
    else:
        if not state.ready_to_judge(prefix) or len(state.request.seqs) < len(samples):
            return
        for s, seq in zip(samples, sorted(state.request.seqs, key=lambda q: q.index)):
            s.score = prefix_score(meter.signals(seq), rule, prefix)
        rejected = sorted(samples, key=lambda s: (-s.score, s.index))[n_keep:]
    for s in rejected:
        s.kept = False
        engine.abort_sample(request_id, s.index)
    state.decided = True
