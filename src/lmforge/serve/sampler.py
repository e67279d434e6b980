"""Batched next-token sampling: every row of logits [M, V] with its own request's settings.

The steps and their order follow vLLM's v1 sampler, so a request behaves as it would there:
0. a constrained request's grammar mask (lmforge.serve.structured): tokens that would break
   its output get -inf before anything else, as vLLM applies its grammar bitmask to the logits;
1. logit bias (OpenAI's `logit_bias`: added to the logits);
2. penalties: repetition (Keskar et al., CTRL, arXiv 1909.05858, as Hugging Face applies it:
   over prompt and output tokens, a positive logit divided by the penalty, a negative one
   multiplied), then OpenAI's frequency and presence penalties over the output tokens only
   (`logit -= frequency * count + presence * [count > 0]`);
3. temperature 0 rows take the argmax here (greedy: no other sampling setting applies);
   the others divide by their temperature;
4. min-p (Nguyen et al., arXiv 2407.01082): drop tokens below `min_p` x the top probability;
5. top-k (ties with the k-th logit kept, as Hugging Face's `TopKLogitsWarper`), then top-p
   (Holtzman et al., arXiv 1904.09751: the smallest set of most likely tokens whose
   probability reaches `top_p`), both from one sort (a `topk` when no row uses top-p);
6. a draw by inverse transform: one uniform number per row from its sequence's own
   generator, so a request's tokens do not depend on what else is in the batch, then one
   batched cumulative sum and search; nothing waits for the device.

Log-probabilities are reported under the model's own distribution, `log_softmax` of the
logits before bias, penalties and temperature (vLLM's default `raw_logprobs`), after the
grammar mask, as vLLM reports them.

Settings become per-row tensors: a row that does not use a setting gets a neutral value (top-p
1 keeps every token, a repetition penalty of 1 changes nothing), and a step that no row of the
batch uses is skipped. `sampling_probs_reference` and `apply_penalties_reference` are the
row-by-row float64 references the tests compare against.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

from lmforge.config import MAX_SEED
from lmforge.serve.sequence import Sequence
from lmforge.serve.structured import allowed_tokens, allowed_tokens_reference


TopLogprobs = list[tuple[int, float]]  # (token id, log-probability), most likely first


@dataclass
class SamplerOutput:
    """One entry per row: the sampled token, and where the row asked for `logprobs`, its
    log-probability and the `logprobs` most likely tokens as (id, logprob), best first."""

    tokens: list[int]
    logprobs: list[float | None]
    top_logprobs: list[TopLogprobs | None]


def make_generator(seed: int | None = None, index: int = 0, device: torch.device | str = "cpu") -> torch.Generator:
    """The random stream of one sequence: sample `index` of a request's `n`, on `device`.

    With a seed, sample i is seeded with `seed + i` (vLLM's rule for `n > 1`), so the samples
    differ and each is reproducible. Without one the seed is drawn from torch's global
    generator, so a command run with a fixed `seed` (torch.manual_seed) is still reproducible.
    """
    if seed is None:
        seed = int(torch.randint(MAX_SEED, ()))
    return torch.Generator(device).manual_seed(seed + index)


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device` without waiting for the queued GPU work (pinned memory, async copy)."""
    if device.type == "cuda":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def _tensor(values: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return _to_device(torch.tensor(values, dtype=dtype), device)


def _counts(rows: list[list[int]], vocab: int, device: torch.device) -> torch.Tensor:
    """[M, V] occurrences of each token id in each row, by one scatter (no loop over the vocabulary)."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), vocab, dtype=torch.long)  # padding lands in an extra column
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    ids = _to_device(ids, device)
    counts = torch.zeros(len(rows), vocab + 1, device=device)
    return counts.scatter_add_(1, ids, torch.ones_like(ids, dtype=counts.dtype))[:, :vocab]


def apply_constraints(logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
    """Logits [M, V] with the tokens each constrained row's grammar forbids set to -inf."""
    allowed = allowed_tokens([s.matcher for s in seqs], logits.shape[1])
    return logits if allowed is None else logits.masked_fill(~allowed.to(logits.device), float("-inf"))


def apply_penalties(logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
    """Logits [M, V] with each row's logit bias, then its repetition, frequency and presence penalties."""
    params = [s.params for s in seqs]
    device, vocab = logits.device, logits.shape[1]
    bias = [(i, t, b) for i, p in enumerate(params) for t, b in p.logit_bias.items()]
    if bias:
        rows, ids, values = zip(*bias)
        index = (_tensor(rows, torch.long, device), _tensor(ids, torch.long, device))
        logits = logits.index_put(index, _tensor(values, logits.dtype, device), accumulate=True)
    repeat = [p.repetition_penalty != 1 for p in params]
    additive = [p.frequency_penalty != 0 or p.presence_penalty != 0 for p in params]
    if not any(repeat) and not any(additive):
        return logits
    output = _counts([s.output if r or a else [] for s, r, a in zip(seqs, repeat, additive)], vocab, device)
    if any(repeat):
        prompt = _counts([s.prompt if r else [] for s, r in zip(seqs, repeat)], vocab, device)
        penalty = _tensor([p.repetition_penalty for p in params], logits.dtype, device)[:, None]
        penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
        logits = torch.where((prompt > 0) | (output > 0), penalised, logits)
    if any(additive):
        frequency = _tensor([p.frequency_penalty for p in params], logits.dtype, device)[:, None]
        presence = _tensor([p.presence_penalty for p in params], logits.dtype, device)[:, None]
        logits = logits - frequency * output - presence * (output > 0)
    return logits


def sampling_probs(logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
    """The distribution [M, V] each row samples from: temperature, min-p, top-k, top-p applied to
    penalised logits. Greedy rows are left at temperature 1 with no cut (the sampler takes their argmax)."""
    params = [s.params for s in seqs]
    device, vocab = logits.device, logits.shape[1]
    temperature = _tensor([p.temperature if not p.greedy else 1.0 for p in params], logits.dtype, device)
    logits = logits / temperature[:, None]
    sampled = [not p.greedy for p in params]
    if any(s and p.min_p > 0 for s, p in zip(sampled, params)):
        min_p = _tensor([p.min_p if s else 0.0 for s, p in zip(sampled, params)], logits.dtype, device)
        probs = logits.softmax(dim=-1)
        logits = logits.masked_fill(probs < min_p[:, None] * probs.amax(dim=-1, keepdim=True), float("-inf"))
    cut = [i for i, (s, p) in enumerate(zip(sampled, params)) if s and (p.top_k or p.top_p < 1)]
    if cut:  # only these rows pay for the sort
        rows = _tensor(cut, torch.long, device)
        top_k = [min(params[i].top_k, vocab) if params[i].top_k else vocab for i in cut]
        top_p = [params[i].top_p for i in cut]
        logits = logits.index_copy(0, rows, _top_k_top_p(logits.index_select(0, rows), top_k, top_p))
    return logits.softmax(dim=-1)


def _top_k_top_p(logits: torch.Tensor, top_k: list[int], top_p: list[float]) -> torch.Tensor:
    """Logits [m, V] with each row's top-k, then top-p cut set to -inf.

    One descending sort serves both; when no row uses top-p, `topk` up to the largest k finds the
    k-th logits at a fraction of a sort's cost. Ties with the k-th logit are kept either way.
    """
    device, inf = logits.device, float("inf")
    k = _tensor(top_k, torch.long, device)[:, None]
    if all(p == 1 for p in top_p):
        kth = logits.topk(max(top_k), dim=-1).values.gather(1, k - 1)
        return logits.masked_fill(logits < kth, -inf)
    ordered, order = logits.sort(dim=-1, descending=True)
    ordered = ordered.masked_fill(ordered < ordered.gather(1, k - 1), -inf)
    probs = ordered.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    # top-p 1 becomes inf: a float32 cumulative sum may reach 1 before the last tokens
    limit = _tensor([p if p < 1 else inf for p in top_p], logits.dtype, device)[:, None]
    return torch.empty_like(logits).scatter_(1, order, ordered.masked_fill(mass_before >= limit, -inf))


def _inverse_cdf(probs: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
    """One token per row drawn from `probs`: the first token whose cumulative probability exceeds
    u x total, with u uniform in [0, 1) from the row's own generator.

    One random number per row (the exponential race needs one per vocabulary entry: at 16 rows
    of 49k tokens that draw alone took longer than the rest of the sampler), one cumulative sum
    and one batched search; tokens of probability 0 have empty intervals and are never drawn.
    """
    draws = []
    for seq in seqs:
        if seq.generator is None:
            seq.generator = make_generator(seq.params.seed, seq.index, probs.device)
        draws.append(torch.rand(1, generator=seq.generator, device=probs.device, dtype=probs.dtype))
    return inverse_cdf(probs, torch.cat(draws))


def inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Per row of probs [M, V] (not necessarily normalised), the first token whose cumulative probability
    exceeds uniforms[row] x the row's total."""
    cdf = probs.cumsum(dim=-1)
    return torch.searchsorted(cdf, uniforms[:, None] * cdf[:, -1:], right=True)[:, 0].clamp_(max=probs.shape[-1] - 1)


class Sampler:
    """Samples one token per row of logits [M, V] (row i belongs to `seqs[i]`).

    Penalties read `seq.token_ids` and `seq.num_prompt_tokens`; a row that samples (temperature
    > 0) draws from `seq.generator`, which must live on the logits' device; a sequence without
    one gets `make_generator(params.seed, seq.index, device)` on its first draw. Logits of any
    float dtype are computed in at least float32 (float64 stays float64, for the tests).
    Nothing in the math waits for the device; the results come back with one copy at the end.
    """

    def __call__(self, logits: torch.Tensor, seqs: list[Sequence]) -> SamplerOutput:
        raw = apply_constraints(logits.to(torch.promote_types(logits.dtype, torch.float32)), seqs)
        logits = apply_penalties(raw, seqs)
        greedy = [s.params.greedy for s in seqs]
        if all(greedy):
            tokens = logits.argmax(dim=-1)
        else:
            tokens = _inverse_cdf(sampling_probs(logits, seqs), seqs)
            if any(greedy):
                tokens = torch.where(_tensor(greedy, torch.bool, logits.device), logits.argmax(dim=-1), tokens)
        return self.output(raw, tokens, [s.params.logprobs for s in seqs])

    @staticmethod
    def distributions(logits: torch.Tensor, seqs: list[Sequence]) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw logits after the grammar mask, what each row's token is chosen from) for rows that all share one
        request's settings: the penalised logits of a greedy request (its argmax), else the probabilities."""
        raw = apply_constraints(logits.to(torch.promote_types(logits.dtype, torch.float32)), seqs)
        penalised = apply_penalties(raw, seqs)
        return raw, penalised if seqs[0].params.greedy else sampling_probs(penalised, seqs)

    @staticmethod
    def output(raw: torch.Tensor, tokens: torch.Tensor, wanted: list[int | None]) -> SamplerOutput:
        ids = tokens.tolist()
        if all(k is None for k in wanted):
            return SamplerOutput(ids, [None] * len(ids), [None] * len(ids))
        logprobs = raw.log_softmax(dim=-1)
        chosen = logprobs.gather(1, tokens[:, None])[:, 0].tolist()
        top_values, top_ids = logprobs.topk(max(k for k in wanted if k is not None), dim=-1)
        top = [list(zip(i, v)) for i, v in zip(top_ids.tolist(), top_values.tolist())]
        return SamplerOutput(
            ids,
            [None if k is None else lp for k, lp in zip(wanted, chosen)],
            [None if k is None else t[:k] for k, t in zip(wanted, top)],
        )


def prompt_logprobs(logits: torch.Tensor, next_ids: torch.Tensor, top_n: int) -> list[tuple[float, TopLogprobs]]:
    """Log-probabilities of a prompt: logits [T, V] at position t predict `next_ids[t]` (the token at t + 1).

    Returns, per position, the log-probability of the actual next token and the `top_n` most
    likely tokens as (id, logprob), best first, under the raw model distribution (what OpenAI's
    legacy `echo` + `logprobs` reports for the prompt).
    """
    logprobs = logits.to(torch.promote_types(logits.dtype, torch.float32)).log_softmax(dim=-1)
    actual = logprobs.gather(1, next_ids.to(logprobs.device, torch.long)[:, None])[:, 0].tolist()
    top_values, top_ids = logprobs.topk(top_n, dim=-1)
    return [(a, list(zip(i, v))) for a, i, v in zip(actual, top_ids.tolist(), top_values.tolist())]


def apply_penalties_reference(logits: torch.Tensor, seq: Sequence) -> torch.Tensor:
    """One row [V] with its grammar mask, bias and penalties, token by token in float64; the reference of
    `apply_constraints` and `apply_penalties`."""
    p, x = seq.params, logits.double().clone()
    if seq.matcher is not None:
        allowed = allowed_tokens_reference(seq.matcher, len(x))
        for token in range(len(x)):
            if token not in allowed:
                x[token] = float("-inf")
    for token, bias in p.logit_bias.items():
        x[token] += bias
    for token in set(seq.token_ids):
        x[token] = x[token] / p.repetition_penalty if x[token] > 0 else x[token] * p.repetition_penalty
    for token, count in Counter(seq.output).items():
        x[token] -= p.frequency_penalty * count + p.presence_penalty
    return x


def sampling_probs_reference(logits: torch.Tensor, seq: Sequence) -> torch.Tensor:
    """The distribution [V] one row of raw logits is sampled from, computed the obvious way in float64
    (a one-hot at the argmax for a greedy row); the reference of the whole sampler."""
    p, x = seq.params, apply_penalties_reference(logits, seq)
    if p.greedy:
        return torch.nn.functional.one_hot(x.argmax(), len(x)).double()
    x = x / p.temperature
    probs = x.softmax(dim=0)
    probs[probs < p.min_p * probs.max()] = 0
    kept = [t for t in range(len(x)) if probs[t] > 0]
    if p.top_k and p.top_k < len(kept):
        kth = sorted((x[t].item() for t in kept), reverse=True)[p.top_k - 1]
        kept = [t for t in kept if x[t] >= kth]
    probs = torch.zeros_like(probs)
    probs[kept] = x[kept].softmax(dim=0)
    mass, nucleus = 0.0, []
    for t in sorted(kept, key=lambda t: -probs[t].item()):
        if p.top_p < 1 and mass >= p.top_p:
            break
        nucleus.append(t)
        mass += probs[t].item()
    out = torch.zeros_like(probs)
    out[nucleus] = x[nucleus].softmax(dim=0)
    return out
