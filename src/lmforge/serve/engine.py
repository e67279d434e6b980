"""The engine: one decode loop for every consumer (`lmforge generate`, evaluation, the server, `LLM`).

Requests become sequences; every `step()` the scheduler picks a ragged batch (decode
tokens of running sequences plus chunks of new prompts), the runner computes it in one
forward, the sampler draws the next token of every sequence that reached its end, and
the detokenizer turns tokens into text, watching for stop strings. A request with n > 1
samples prefills its prompt once and forks: the samples share the prompt's cache blocks.
A constrained request's samples each follow their own grammar matcher: the sampler masks
the tokens it forbids, and a sample ends when its grammar is complete.

With speculative decoding on (`EngineConfig.speculative`), every decoding sequence gets up to k
draft tokens appended before the step is scheduled; the step computes them with the sequence's
last token, and `_verify` keeps the drafts the target accepts plus one token of its own
(lmforge.serve.speculative). The rejected drafts leave the sequence before its blocks are
committed to the prefix cache. Their cache entries are simply overwritten later, except in a
model with per-sequence state (linear mixers) or summed entries (sparse attention's query sums):
there the runner's snapshot from before the step is put back, and the accepted tokens are
computed again with the next step's tokens, so no mixer needs to know about drafts.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from lmforge.device import resolve_precision
from lmforge.errors import ConfigError, GenerationError
from lmforge.eval.dtr import DeepThinkingMeter, DTRConfig, mean_signals
from lmforge.model.transformer import Transformer
from lmforge.quant.linear import QuantLinear, calibrate_kernel_rows
from lmforge.serve.block_manager import BlockManager, SlotPool
from lmforge.serve.draft import DraftModel
from lmforge.serve.detokenize import IncrementalDetokenizer
from lmforge.serve.memory import MemoryPlan, plan_memory
from lmforge.serve.params import SamplingParams
from lmforge.serve.runner import ModelRunner, Observer
from lmforge.serve.sampler import Sampler, make_generator, prompt_logprobs
from lmforge.serve.scheduler import Scheduler, SchedulerConfig
from lmforge.serve.sequence import Sequence
from lmforge.serve.speculative import PromptLookup, SpeculativeConfig, verify
from lmforge.serve.structured import GrammarCache
from lmforge.serve.think import Decision, decide
from lmforge.tokenizer import Tokenizer

TokenLogprob = tuple[int, float | None, list[tuple[int, float]]]  # (token, its logprob, top alternatives)


@dataclass
class EngineConfig:
    """Sizes and policies of the engine."""

    max_num_seqs: int = 64
    max_num_batched_tokens: int = 512
    max_waiting: int = 1024
    block_size: int = 16
    kv_cache_memory: int | None = None  # bytes; None: a share of the free memory
    dtype: torch.dtype = torch.bfloat16
    enable_prefix_caching: bool | None = None  # None: on when the model keeps no per-sequence state
    seed: int = 0  # source of the random streams of requests without a seed
    calibrate: bool = True  # measure where quantized layers switch from the packed kernel to a float product
    keep_dense_weights: bool = True  # quantized layers keep a dequantized copy for many-row products (prefill,
    # large batches): faster, at the memory of a float model; decoding few rows reads the packed weights
    dtr: DTRConfig = field(default_factory=DTRConfig)  # settling threshold and depth of the Deep-Thinking Ratio
    speculative: SpeculativeConfig | None = None  # drafts verified by the model (lmforge.serve.speculative); None: off


@dataclass
class Delta:
    """What one sample of a request gained in one step."""

    request_id: str
    index: int
    token_ids: list[int]
    text: str
    logprobs: list[TokenLogprob] | None
    finish_reason: str | None = None
    prompt_logprobs: list[TokenLogprob] | None = None  # on a request's first delta, when asked for
    num_cached_tokens: int = 0  # on a request's first delta: prompt tokens found in the prefix cache
    signals: dict[str, float] | None = None  # on a sample's last delta, when asked for: DTR, mean log-probability
    # and mean self-certainty of its tokens
    token_signals: list[tuple[bool, float, float]] | None = None  # ... and each token's (deep, logprob, certainty)
    kept: bool | None = None  # on a sample's last delta under a Think@n rule: whether it goes to the vote
    score: float | None = None  # ... and its prefix score (rules that score)

    def extend(self, later: "Delta") -> "Delta":
        """This delta followed by a later one of the same sample in the same step (a verified run of tokens)."""
        self.token_ids, self.text = self.token_ids + later.token_ids, self.text + later.text
        if later.logprobs is not None:
            self.logprobs = (self.logprobs or []) + later.logprobs
        self.finish_reason, self.signals, self.token_signals = later.finish_reason, later.signals, later.token_signals
        self.kept, self.score = later.kept, later.score
        return self


@dataclass
class Verdict:
    """What verifying one sequence's drafts gave: how many were accepted, the tokens to emit (those drafts and
    the target's own next token) and their log-probabilities where asked for."""

    accepted: int
    tokens: list[int]
    logprobs: list[TokenLogprob | None]


@dataclass
class Request:
    """A request's sequences and what the engine knows about it."""

    request_id: str
    prompt: list[int]
    params: SamplingParams
    seqs: list[Sequence] = field(default_factory=list)
    detokenizers: dict[int, IncrementalDetokenizer] = field(default_factory=dict)
    prompt_logprobs: list[TokenLogprob] | None = None
    first_token: float | None = None
    decision: Decision | None = None  # a Think@n rule's, once made
    held: dict[int, str] = field(default_factory=dict)  # samples that finished before it: index -> finish reason

    @property
    def finished(self) -> bool:
        return len(self.seqs) == self.params.n and all(s.finished for s in self.seqs)

    @property
    def undecided(self) -> bool:
        return self.params.judged and self.decision is None


def engine_dtype(name: str, device: torch.device) -> torch.dtype:
    """The engine's compute dtype for a precision name ("auto": bf16 where the device runs it natively)."""
    return torch.bfloat16 if resolve_precision(name, device) == "bf16" else torch.float32


def cast_parameters(model: Transformer, dtype: torch.dtype) -> Transformer:
    """Cast the float parameters (not buffers: a quantized layer keeps its fp16 scales) to `dtype`."""
    for param in model.parameters():
        if param.is_floating_point():
            param.data = param.data.to(dtype)
    return model


class LLMEngine:
    """Continuous batching over a paged cache for `model` (any mixers, float or quantized weights)."""

    def __init__(self, model: Transformer, tokenizer: Tokenizer, config: EngineConfig | None = None,
                 draft_model: Transformer | None = None):
        self.config = config = config or EngineConfig()
        self.model, self.tokenizer = model, tokenizer
        self.max_seq_len = model.cfg.max_seq_len
        method = config.speculative.method if config.speculative else None
        if (method == "draft") != (draft_model is not None):
            raise ConfigError("speculative method 'draft' needs a draft model, and only it takes one")
        specs = model.cache_specs(config.dtype, config.block_size)
        if draft_model is not None:  # its entries share the target's blocks and slots
            cast_parameters(draft_model, config.dtype)
            specs = specs + draft_model.cache_specs(config.dtype, config.block_size)
        self.plan: MemoryPlan = plan_memory(specs, config.block_size, config.max_num_seqs, self.max_seq_len,
                                            config.kv_cache_memory)
        prefix = config.enable_prefix_caching
        self.prefix_caching = self.plan.sequence_bytes == 0 if prefix is None else prefix and self.plan.sequence_bytes == 0
        self.blocks = BlockManager(self.plan.num_blocks, config.block_size, self.prefix_caching)
        self.slots = SlotPool(self.plan.num_slots) if self.plan.num_slots else None
        self.scheduler = Scheduler(SchedulerConfig(config.max_num_seqs, config.max_num_batched_tokens, config.max_waiting),
                                   self.blocks, self.slots)
        cast_parameters(model, config.dtype)
        modules = [*model.modules(), *model.fuse_projections()]
        for module in modules:
            if isinstance(module, QuantLinear):
                module.keep_dense = config.keep_dense_weights
        self.kernel_rows = calibrate_kernel_rows(modules, config.dtype) if config.calibrate else {}
        self.runner = ModelRunner(model, self.plan.num_blocks, config.block_size, max(self.plan.num_slots, 1), config.dtype)
        self.sampler = Sampler()
        self.requests: dict[str, Request] = {}
        self._seeds = torch.Generator().manual_seed(config.seed)
        self.observer: Observer | None = None
        self.meter = DeepThinkingMeter(model, config.dtr)  # watches the requests that ask for DTR or Think@n
        self.grammars = GrammarCache(tokenizer, model.cfg.vocab_size)
        self.draft_tokens = self.accepted_tokens = 0  # speculative decoding's totals (acceptance rate)
        self.proposer = self._proposer(config.speculative, draft_model)
        self._draft_probs: dict[int, torch.Tensor | None] = {}

    # requests

    def add_request(self, request_id: str, prompt: list[int], params: SamplingParams) -> Request:
        """Queue a request; raises GenerationError for a prompt the model or the cache cannot take."""
        if request_id in self.requests:
            raise GenerationError(f"request id {request_id!r} is already in use")
        self.check_prompt(prompt, params)
        request = Request(request_id, list(prompt), params)
        if params.prompt_logprobs is not None:
            request.prompt_logprobs = [(prompt[0], None, [])]  # the first token has no context to predict it
        seq = self._new_sequence(request, 0)
        if not self.scheduler.add(seq):
            raise EngineFullError("the engine's waiting queue is full; retry later")
        self.requests[request_id] = request
        return request

    def check_prompt(self, prompt: list[int], params: SamplingParams) -> None:
        """Refuse an empty prompt, ids outside the vocabulary, a prompt that leaves no room to generate, and a
        constraint that does not compile (compiling it here keeps it for the request's samples)."""
        if not prompt:
            raise GenerationError("the prompt is empty; give at least one token")
        vocab = self.model.cfg.vocab_size
        bad = next((t for t in prompt if not 0 <= t < vocab), None)
        if bad is not None:
            raise GenerationError(f"token id {bad} is outside the vocabulary (0..{vocab - 1})")
        if params.max_tokens == 0 and params.n > 1:
            raise GenerationError("max_tokens 0 (only the prompt) asks for nothing to sample; give n 1")
        bad = next((t for t in params.logit_bias if not 0 <= t < vocab), None)
        if bad is not None:
            raise GenerationError(f"logit_bias names token id {bad}, outside the vocabulary (0..{vocab - 1})")
        if len(prompt) >= self.max_seq_len:
            raise GenerationError(f"the prompt has {len(prompt)} tokens but the model's context is {self.max_seq_len}; "
                                  "shorten the prompt")
        if not self.blocks.fits_alone(len(prompt) + 1):
            raise GenerationError(f"the prompt has {len(prompt)} tokens but the cache holds {self.plan.max_tokens} in all; "
                                  "shorten the prompt or give the server a larger --kv-cache-memory")
        if params.constraint is not None:
            self.grammars.compile(params.constraint)

    def context_full(self, prompt: list[int], params: SamplingParams) -> bool:
        """Whether a request stopped for "length" because the context ran out, not at its max_tokens."""
        return params.max_tokens is None or len(prompt) + params.max_tokens > self.max_seq_len

    def abort(self, request_id: str) -> None:
        """Stop a request now and free its memory (a client went away, Think@n rejected it)."""
        request = self.requests.pop(request_id, None)
        if request is None:
            return
        for seq in request.seqs:
            if not seq.finished:
                self.scheduler.finish(seq, "abort")
        self.meter.release(request_id, [seq.seq_id for seq in request.seqs])

    def has_unfinished(self) -> bool:
        return bool(self.requests)

    def _new_sequence(self, request: Request, index: int, tokens: list[int] | None = None) -> Sequence:
        params = request.params
        seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, (), generator=self._seeds))
        seq = Sequence(list(tokens if tokens is not None else request.prompt), params, request.request_id, index,
                       generator=make_generator(seed, index, self.runner.device), num_prompt_tokens=len(request.prompt))
        if params.constraint is not None:
            seq.matcher = self.grammars.matcher(params.constraint)
        request.seqs.append(seq)
        request.detokenizers[index] = IncrementalDetokenizer(self.tokenizer, params)
        return seq

    # the loop

    def step(self) -> list[Delta]:
        """Run one forward over what the scheduler picks; return every sample's progress."""
        drafted = self._propose() if self.config.speculative else []
        batch = self.scheduler.schedule()
        drafted = self._fit_drafts(drafted, batch)
        deltas = [self._emit(self.requests[seq.request_id], seq, [], self._detok(seq).flush(), None, "length")
                  for seq in self.scheduler.take_truncated() if seq.request_id in self.requests]
        if not batch:
            return deltas + self._judge_waiting()
        metered = any(seq.params.wants_signals for seq, _ in batch)
        saved = {seq.seq_id: self.runner.snapshot(seq, seq.num_computed, len(seq)) for seq in drafted
                 if self.runner.stateful}
        logits = dict(zip((seq.seq_id for seq, _ in batch), self.runner.execute(batch, self._observer(metered))))
        if metered:
            self.meter.observe_logits(logits)
        verdicts = {seq.seq_id: self._verify(seq, logits[seq.seq_id]) for seq in drafted}
        self.draft_tokens += sum(seq.num_draft for seq in drafted)
        self.accepted_tokens += sum(v.accepted for v in verdicts.values())
        batch = [(seq, self._settle(seq, n, verdicts[seq.seq_id], saved) if seq.seq_id in verdicts else n)
                 for seq, n in batch]
        for seq, n in batch:  # prompt log-probabilities of the chunk just computed
            request = self.requests.get(seq.request_id)
            start = seq.num_computed
            if request and request.prompt_logprobs is not None and start < seq.num_prompt_tokens and not seq.finished:
                self._record_prompt_logprobs(request, seq, start, n, logits[seq.seq_id])
        ready: list[tuple[Sequence, torch.Tensor]] = []
        for seq in self.scheduler.computed(batch):
            if seq.seq_id in verdicts:
                continue
            request = self.requests[seq.request_id]
            if request.params.max_tokens == 0:  # only the prompt (its log-probabilities) was wanted
                deltas.append(self._emit(request, seq, [], "", None, "length"))
                continue
            ready.append((seq, logits[seq.seq_id][-1:]))
            if request.params.n > 1 and len(request.seqs) == 1:
                ready += [(child, logits[seq.seq_id][-1:]) for child in self._fork(request, seq)]
        if ready:
            deltas += self._sample(ready)
        deltas += [self._emit_verified(seq, verdicts[seq.seq_id]) for seq in drafted if not seq.finished]
        return deltas + self._judge_waiting()

    # speculative decoding

    def _proposer(self, spec: SpeculativeConfig | None, draft_model: Transformer | None):
        if spec is None:
            return None
        if draft_model is None:
            return PromptLookup(spec)
        return DraftModel(draft_model, self.model.cfg.vocab_size, self.plan.num_blocks, self.config.block_size,
                          max(self.plan.num_slots, 1), self.config.dtype)

    def _speculates(self, seq: Sequence) -> bool:
        """Whether a running sequence gets drafts this step: it is decoding, and its request needs nothing that
        watches single tokens (DTR, Think@n)."""
        return (seq.num_uncomputed >= 1 and seq.num_computed >= seq.num_prompt_tokens
                and not seq.params.wants_signals and seq.params.think is None)

    def _tokens_left(self, seq: Sequence) -> int:
        limit = self.max_seq_len - seq.num_prompt_tokens
        if seq.params.max_tokens is not None:
            limit = min(limit, seq.params.max_tokens)
        return limit - seq.num_output_tokens

    def _propose(self) -> list[Sequence]:
        """Append drafts to every decoding sequence that gets some (and blocks for them: a draft model writes its
        own entries there); returns those sequences, their draft distributions kept for `_verify`."""
        k = self.config.speculative.num_tokens
        seqs = [seq for seq in self.scheduler.running if self._speculates(seq) and self._tokens_left(seq) > 1]
        rooms = []
        for seq in seqs:
            room = min(k, self._tokens_left(seq) - 1)
            if not self.blocks.can_grow(seq, len(seq) + room):
                room = 0
            else:
                self.blocks.grow(seq, len(seq) + room)
            rooms.append(room)
        drafted, self._draft_probs = [], {}
        for seq, (drafts, probs) in zip(seqs, self.proposer.propose(seqs, rooms)):
            if seq.matcher is not None:  # a draft the grammar forbids could never be accepted
                drafts = drafts[: seq.matcher.validate_tokens(drafts)]
            if drafts:
                seq.token_ids += drafts
                seq.num_draft = len(drafts)
                self._draft_probs[seq.seq_id] = probs
                drafted.append(seq)
        return drafted

    @staticmethod
    def _fit_drafts(drafted: list[Sequence], batch: list[tuple[Sequence, int]]) -> list[Sequence]:
        """Drop the drafts the step has no room for (a token budget cut, a preempted sequence); the sequences
        left with drafts."""
        scheduled = {seq.seq_id: n for seq, n in batch}
        kept = []
        for seq in drafted:
            base = len(seq) - seq.num_draft - seq.num_computed  # the real tokens still to compute
            keep = max(0, min(seq.num_draft, scheduled.get(seq.seq_id, 0) - base))
            if keep < seq.num_draft:
                del seq.token_ids[len(seq) - seq.num_draft + keep:]
                seq.num_draft = keep
            if keep:
                kept.append(seq)
        return kept

    def _verify(self, seq: Sequence, logits: torch.Tensor) -> Verdict:
        """Check a sequence's drafts against the target's logits at their positions (the last d + 1 rows)."""
        d = seq.num_draft
        committed, drafts = len(seq) - d, seq.token_ids[len(seq) - d:]
        views = [Sequence(seq.token_ids[: committed + j], seq.params, num_prompt_tokens=seq.num_prompt_tokens)
                 for j in range(d + 1)]
        if seq.matcher is not None:  # each position's mask is the grammar's after the drafts before it
            matcher = seq.matcher.deep_copy()
            for j, view in enumerate(views):
                view.matcher = matcher.deep_copy()
                if j < d:
                    matcher.consume_token(drafts[j])
        raw, target = self.sampler.distributions(logits[-(d + 1):], views)
        probs = self._draft_probs.get(seq.seq_id)
        accepted, extra = verify(target, drafts, None if probs is None else probs[:d], seq.params.greedy, seq.generator)
        tokens = drafts[:accepted] + [extra]
        logprobs: list = [None] * len(tokens)
        if seq.params.logprobs is not None:
            out = self.sampler.output(raw[: len(tokens)], torch.tensor(tokens), [seq.params.logprobs] * len(tokens))
            logprobs = [(t, lp, top) for t, lp, top in zip(tokens, out.logprobs, out.top_logprobs)]
        return Verdict(accepted, tokens, logprobs)

    def _settle(self, seq: Sequence, n: int, verdict: Verdict, saved: dict) -> int:
        """Take the rejected drafts out of a verified sequence; how many of its n scheduled tokens count as
        computed: those before the first rejection, or none where a snapshot had to be put back."""
        rejected = seq.num_draft - verdict.accepted
        del seq.token_ids[len(seq) - rejected:]
        seq.num_draft = 0
        if rejected and seq.seq_id in saved:
            self.runner.restore(saved[seq.seq_id])
            return 0
        return n - rejected

    def _emit_verified(self, seq: Sequence, verdict: Verdict) -> Delta:
        """One delta for the tokens a verification gave, each detokenized and checked for a stop in turn."""
        request = self.requests[seq.request_id]
        del seq.token_ids[len(seq) - verdict.accepted:]  # appended again one by one, so stops see each in turn
        delta = None
        for token, logprobs in zip(verdict.tokens, verdict.logprobs):
            seq.append(token)
            step = self._advance(request, seq, token, None if logprobs is None else [logprobs])
            delta = step if delta is None else delta.extend(step)
            if seq.finished:
                break
        return delta

    def _observer(self, metered: bool) -> Observer | None:
        """The user's observer, and the meter when a sequence in the batch needs its signals."""
        meter = self.meter if metered else None
        if meter is None or self.observer is None:
            return meter or self.observer
        user = self.observer
        return lambda seq, layer, hidden: (user(seq, layer, hidden), meter(seq, layer, hidden))

    def _judge_waiting(self) -> list[Delta]:
        return [d for request in list(self.requests.values()) if request.undecided for d in self._judge(request)]

    def _judge(self, request: Request) -> list[Delta]:
        """Apply the request's Think@n rule once it can decide: stop (and free) the samples it rejects, and
        release the samples that finished while it waited."""
        params = request.params
        if len(request.seqs) < params.n:
            return []
        n_keep = max(1, math.ceil(params.think_keep * params.n))
        decision = decide(params.think, n_keep, request.seqs, params.think_prefix, self.meter.signals)
        if decision is None:
            return []
        request.decision = decision
        deltas = []
        for seq in sorted(request.seqs, key=lambda q: q.index):
            if seq.index in request.held:
                deltas.append(self._emit(request, seq, [], "", None, request.held.pop(seq.index)))
            elif seq.index in decision.rejected:
                deltas.append(self._emit(request, seq, [], self._detok(seq).flush(), None, "abort"))
        return deltas

    def _detok(self, seq: Sequence) -> IncrementalDetokenizer:
        return self.requests[seq.request_id].detokenizers[seq.index]

    def _record_prompt_logprobs(self, request: Request, seq: Sequence, start: int, n: int, logits: torch.Tensor) -> None:
        """Log-probabilities of prompt tokens start+1 .. from the chunk's logits (once: not again after preemption)."""
        have = len(request.prompt_logprobs)  # entries for prompt positions 0 .. have-1
        end = min(start + n, seq.num_prompt_tokens - 1)  # positions predicting a prompt token
        if end + 1 <= have:
            return
        first = have - 1  # the position predicting prompt token `have`
        rows = logits[first - start : end - start]
        targets = seq.token_ids[first + 1 : end + 1]
        top = request.params.prompt_logprobs
        for target, (lp, alternatives) in zip(targets, prompt_logprobs(rows, torch.tensor(targets), top)):
            request.prompt_logprobs.append((target, lp, alternatives))

    def _fork(self, request: Request, parent: Sequence) -> list[Sequence]:
        """The other n - 1 samples of a request whose prompt is computed: they share its blocks and copy its
        state (or, without room for them now, wait and prefill from the prefix cache)."""
        children = []
        for index in range(1, request.params.n):
            child = self._new_sequence(request, index, parent.token_ids)
            for src, dst in self.scheduler.fork(parent, child):
                self.runner.copy_block(src, dst)
            if child.slot is not None:
                self.runner.copy_slot(parent.slot, child.slot)
            children.append(child)
        return children

    def _sample(self, ready: list[tuple[Sequence, torch.Tensor]]) -> list[Delta]:
        seqs = [seq for seq, _ in ready]
        out = self.sampler(torch.cat([lg for _, lg in ready]), seqs)
        deltas = []
        for i, seq in enumerate(seqs):
            request = self.requests[seq.request_id]
            token = out.tokens[i]
            seq.append(token)
            logprobs = None if out.logprobs[i] is None else [(token, out.logprobs[i], out.top_logprobs[i] or [])]
            deltas.append(self._advance(request, seq, token, logprobs))
        return deltas

    def _advance(self, request: Request, seq: Sequence, token: int, logprobs) -> Delta:
        """Detokenize the new token, and finish the sample on a stop token, a stop string, a complete grammar
        or its length limit."""
        params = request.params
        if seq.matcher is not None:
            seq.matcher.consume_token(token)
        detok = request.detokenizers[seq.index]
        stop_ids = set(params.stop_token_ids)
        if not params.ignore_eos and self.tokenizer.eos_id is not None:
            stop_ids.add(self.tokenizer.eos_id)
        reason = None
        if token in stop_ids:
            text, reason = detok.flush(), "stop"
        else:
            text, stopped = detok.push([token])
            if stopped or (seq.matcher is not None and seq.matcher.is_stopped()):  # nothing but the end may follow
                text, reason = (text if stopped else text + detok.flush()), "stop"
        limit = self.max_seq_len - seq.num_prompt_tokens
        if params.max_tokens is not None:
            limit = min(limit, params.max_tokens)
        if reason is None and (seq.num_output_tokens >= limit or len(seq) >= self.max_seq_len):
            text, reason = text + detok.flush(), "length"
        return self._emit(request, seq, [token], text, logprobs, reason)

    def _emit(self, request: Request, seq: Sequence, tokens: list[int], text: str, logprobs, reason: str | None) -> Delta:
        """A delta of `seq`; the request's first one carries its prompt log-probabilities and cached-token count,
        a sample's last one its DTR and Think@n verdict. A sample that finishes before its rule has decided is
        stopped now, and its last delta held until the decision."""
        delta = Delta(request.request_id, seq.index, tokens, text, logprobs, None)
        if request.first_token is None:
            request.first_token = time.monotonic()
            delta.prompt_logprobs, delta.num_cached_tokens = request.prompt_logprobs, seq.num_cached
        if reason is None:
            return delta
        self.scheduler.finish(seq, reason)
        if request.undecided:
            request.held[seq.index] = reason
            return delta
        delta.finish_reason = reason
        params, decision = request.params, request.decision
        if params.return_dtr:
            delta.token_signals = self.meter.signals(seq)
            delta.signals = mean_signals(delta.token_signals)
        if params.judged:
            delta.kept, delta.score = seq.index not in decision.rejected, decision.scores.get(seq.index)
        if request.finished and not request.held:
            self.requests.pop(request.request_id, None)
            self.meter.release(request.request_id, [s.seq_id for s in request.seqs])
        return delta


class EngineFullError(GenerationError):
    """The engine's waiting queue is full (the server answers 503)."""
