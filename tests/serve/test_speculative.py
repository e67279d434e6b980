"""Speculative decoding: prompt lookup against its loop reference, the acceptance rule against a float64
reference, greedy output identical to plain decoding for every mixer (drafts right, wrong and partly right,
rollback of recurrent state included), and sampled output distributed as plain sampling (a chi-square test
that a wrong rule fails)."""

import math
import random
from collections import Counter

import httpx
import openai
import pytest
import torch
from helpers import ServerThread, tiny_model

from lmforge.errors import ConfigError
from lmforge.serve.engine import EngineConfig, LLMEngine
from lmforge.serve.llm import LLM
from lmforge.serve.params import SamplingParams
from lmforge.serve.sampler import sampling_probs_reference
from lmforge.serve.sequence import Sequence
from lmforge.serve.server import OpenAIServer
from lmforge.serve.speculative import SpeculativeConfig, propose_ngram, propose_ngram_reference, verify, verify_reference
from lmforge.serve.structured import Constraint

MIXERS = [["softmax"], ["sparse"], ["mamba2s"], ["2mamba_e"], ["2mamba", "softmax"], ["mamba2"]]


def model_for(vocab: int, mixers, seed: int = 0, noise: float = 0.5):
    """A tiny float64 model; another seed scales every weight by its own random factors of spread `noise`
    (another model, close to the first for a small noise)."""
    model = tiny_model(vocab, mixers=list(mixers), max_seq_len=128, linear_chunk_size=8, second_order_chunk_size=8,
                       sparse_block_q=8, sparse_block_k=8, sparse_top_k=0.3, sparse_top_p=0.4).double()
    if seed:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1 + noise * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return model


def engine_config(k: int = 4, **kw) -> EngineConfig:
    return EngineConfig(dtype=torch.float64, block_size=4, max_num_batched_tokens=32, max_num_seqs=4,
                        speculative=SpeculativeConfig(num_tokens=k, min_ngram=1, max_ngram=3), **kw)


def greedy_reference(model, prompt: list[int], n: int) -> list[int]:
    tokens = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            tokens.append(int(model(torch.tensor([tokens]))[0, -1].argmax()))
    return tokens[len(prompt):]


class Scripted:
    """Drafts from the known greedy continuation, corrupted at a random place (or wholly random): every number
    of accepted drafts from 0 to k occurs."""

    def __init__(self, truth: dict[tuple, list[int]], vocab: int, seed: int = 0):
        self.truth, self.vocab, self.rng = truth, vocab, random.Random(seed)
        self.proposed = 0

    def propose(self, seqs, rooms):
        out = []
        for seq, room in zip(seqs, rooms):
            future = self.truth[tuple(seq.prompt)][seq.num_output_tokens:][:room]
            cut = self.rng.randint(0, len(future))
            wrong = [(t + 1 + self.rng.randrange(self.vocab - 1)) % self.vocab for t in future[cut:]]
            out.append((future[:cut] + wrong, None))
            self.proposed += len(future)
        return out


def test_prompt_lookup_equals_its_reference():
    rng = random.Random(0)
    for _ in range(300):
        tokens = [rng.randrange(4) for _ in range(rng.randint(1, 40))]
        for k, lo, hi in [(4, 1, 3), (2, 2, 4), (6, 1, 1)]:
            assert propose_ngram(tokens, k, lo, hi) == propose_ngram_reference(tokens, k, lo, hi)
    assert propose_ngram([1, 2, 3, 9, 1, 2, 3, 7, 5, 1, 2, 3], 3, 1, 3) == [7, 5, 1]  # the latest occurrence wins
    assert propose_ngram([1, 2, 3], 3, 2, 3) == []


@pytest.mark.parametrize("with_q", [False, True])
def test_acceptance_rule_equals_the_float64_reference(with_q):
    rng = torch.Generator().manual_seed(0)
    for trial in range(200):
        d, vocab = 1 + trial % 4, 6
        target = torch.rand(d + 1, vocab, generator=rng, dtype=torch.float64) ** 4
        target /= target.sum(-1, keepdim=True)
        q = torch.rand(d, vocab, generator=rng, dtype=torch.float64) if with_q else None
        if q is not None:
            q /= q.sum(-1, keepdim=True)
        drafts = torch.randint(vocab, (d,), generator=rng).tolist()
        seed = 1000 + trial
        uniforms = torch.rand(d + 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).tolist()
        fast = verify(target, drafts, q, False, torch.Generator().manual_seed(seed))
        assert fast == verify_reference(target, drafts, q, False, uniforms)
        assert verify(target, drafts, q, True, rng) == verify_reference(target, drafts, q, True, [])


@pytest.mark.parametrize("mixers", MIXERS, ids="+".join)
def test_greedy_output_is_plain_greedy_output(tokenizer, mixers):
    model = model_for(tokenizer.vocab_size, mixers)
    rng = random.Random(1)
    prompts = [[rng.randrange(3, 300) for _ in range(rng.randint(2, 20))] for _ in range(5)]
    truth = {tuple(p): greedy_reference(model, p, 24) for p in prompts}
    llm = LLM(model, tokenizer, engine_config(k=4))
    llm.engine.proposer = scripted = Scripted(truth, tokenizer.vocab_size)
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=24, ignore_eos=True))
    assert [o.outputs[0].token_ids for o in outs] == [truth[tuple(p)] for p in prompts]
    engine = llm.engine
    assert 0 < engine.accepted_tokens < engine.draft_tokens  # some drafts accepted, some rejected
    assert engine.blocks.num_free_blocks == engine.plan.num_blocks  # nothing left behind
    lookup = LLM(model, tokenizer, engine_config(k=3))  # the real drafter, on prompts that repeat themselves
    repeated = [p * 3 for p in prompts]
    outs = lookup.generate(repeated, SamplingParams(temperature=0, max_tokens=16, ignore_eos=True))
    assert [o.outputs[0].token_ids for o in outs] == [greedy_reference(model, p, 16) for p in repeated]
    assert lookup.engine.draft_tokens > 0 and scripted.proposed > 0


@pytest.mark.parametrize("target, draft, noise", [
    (["softmax"], ["softmax"], 0.7), (["mamba2s"], ["mamba2s"], 0.2), (["sparse"], ["sparse"], 0.7),
    (["2mamba", "softmax"], ["2mamba", "softmax"], 0.7), (["softmax"], ["mamba2s"], 0.5), (["softmax"], None, 0)],
    ids=["softmax", "mamba2s", "sparse", "hybrid", "softmax<-mamba2s", "softmax<-itself"])
def test_draft_model_greedy_output_is_plain_greedy_output(tokenizer, target, draft, noise):
    """Drafts from a perturbed copy of the target (right often, not always: the noise is chosen so), from
    another architecture, and from the target itself (always right)."""
    model = model_for(tokenizer.vocab_size, target)
    close = draft == target
    drafter = model_for(tokenizer.vocab_size, draft or target, seed=5 if draft else 0, noise=noise)
    rng = random.Random(2)
    prompts = [[rng.randrange(3, 300) for _ in range(rng.randint(2, 20))] for _ in range(5)]
    config = EngineConfig(dtype=torch.float64, block_size=4, max_num_batched_tokens=32, max_num_seqs=3,
                          speculative=SpeculativeConfig(method="draft", num_tokens=3))
    llm = LLM(model, tokenizer, config, draft_model=drafter)
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=20, ignore_eos=True, n=2))
    for prompt, out in zip(prompts, outs):
        expected = greedy_reference(model, prompt, 20)
        assert [o.token_ids for o in out.outputs] == [expected, expected]
    engine = llm.engine
    if draft is None:  # the target drafting for itself: every draft is its own greedy choice
        assert engine.accepted_tokens == engine.draft_tokens > 0
    elif close:
        assert 0 < engine.accepted_tokens < engine.draft_tokens, (engine.accepted_tokens, engine.draft_tokens)
    assert engine.blocks.num_free_blocks == engine.plan.num_blocks


def test_drafts_respect_stops_limits_logprobs_and_grammars(tokenizer):
    model = model_for(tokenizer.vocab_size, ["softmax"])
    prompt = [5, 9, 13, 7]
    truth = greedy_reference(model, prompt, 30)
    plain, spec = LLM(model, tokenizer, EngineConfig(dtype=torch.float64, block_size=4)), LLM(model, tokenizer, engine_config(k=5))
    spec.engine.proposer = Scripted({tuple(prompt): truth}, tokenizer.vocab_size, seed=3)
    stop = tokenizer.decode(truth[5:7])
    for params in (SamplingParams(temperature=0, max_tokens=9, ignore_eos=True, logprobs=2),
                   SamplingParams(temperature=0, max_tokens=30, ignore_eos=True, stop=[stop]),
                   SamplingParams(temperature=0, max_tokens=30, ignore_eos=True, stop_token_ids=[truth[11]])):
        a, b = (llm.generate([prompt], params)[0].outputs[0] for llm in (plain, spec))
        assert (a.token_ids, a.text, a.finish_reason) == (b.token_ids, b.text, b.finish_reason)
        if params.logprobs:
            assert [(t, round(lp, 9), [(i, round(v, 9)) for i, v in top]) for t, lp, top in a.logprobs] == \
                [(t, round(lp, 9), [(i, round(v, 9)) for i, v in top]) for t, lp, top in b.logprobs]
    constraint = Constraint("regex", "[0-9]{3}-[a-z]{4}")
    spec.engine.proposer = None
    lookup = LLM(model, tokenizer, engine_config(k=4))
    a, b = (llm.generate([tokenizer.encode("123-abcd 123-")], SamplingParams(temperature=0, max_tokens=20,
                                                                         constraint=constraint))[0].outputs[0]
            for llm in (plain, lookup))
    assert a.token_ids == b.token_ids and a.finish_reason == b.finish_reason == "stop"


def test_speculative_settings_are_checked():
    with pytest.raises(ConfigError, match="unknown speculative method"):
        SpeculativeConfig(method="medusa")
    with pytest.raises(ConfigError, match="min_ngram"):
        SpeculativeConfig(min_ngram=5, max_ngram=2)
    with pytest.raises(ConfigError, match="num_tokens"):
        SpeculativeConfig(num_tokens=0)


def chi_square_limit(dof: int, z: float = 4.75) -> float:
    """The chi-square value a statistic with `dof` degrees of freedom exceeds with probability about 1e-6
    (Wilson and Hilferty's normal approximation)."""
    c = 2 / (9 * dof)
    return dof * (1 - c + z * math.sqrt(c)) ** 3


def statistic(counts: Counter, expected: dict, total: int) -> tuple[float, int]:
    """Pearson's chi-square over outcomes, those expected fewer than 5 times pooled into one cell."""
    stat, rare_seen, rare_expected, cells = 0.0, 0, 0.0, 0
    for outcome, p in expected.items():
        e = p * total
        if e < 5:
            rare_seen, rare_expected = rare_seen + counts[outcome], rare_expected + e
        else:
            stat, cells = stat + (counts[outcome] - e) ** 2 / e, cells + 1
    if rare_expected > 0:
        stat, cells = stat + (rare_seen - rare_expected) ** 2 / rare_expected, cells + 1
    return stat, cells - 1


@pytest.mark.parametrize("drafter", ["random drafts", "draft model"])
def test_sampled_output_is_distributed_as_plain_sampling(tokenizer, drafter):
    """Three tokens after a prompt from an 8-token vocabulary at temperature 0.9 with top-k 6: the second and
    third come from verification against random drafts (a one-hot q) or a draft model's samples (its own q).
    Their joint frequencies over 6,000 samples match the exact distribution (each step's sampling
    distribution from the float64 reference, multiplied out); uniform drafts, which a rule that accepted
    every draft would produce, are rejected by the same test."""
    vocab, params = 8, SamplingParams(temperature=0.9, top_k=6, max_tokens=3, ignore_eos=True, n=100)
    model = model_for(vocab, ["softmax"], seed=2)
    prompt = [1, 4, 2]

    def step_probs(tokens: list[int]) -> list[float]:
        with torch.no_grad():
            logits = model(torch.tensor([prompt + tokens]))[0, -1]
        return sampling_probs_reference(logits, Sequence(prompt + tokens, params, num_prompt_tokens=3)).tolist()

    exact = {}
    for a, pa in enumerate(step_probs([])):
        for b, pb in enumerate(step_probs([a])) if pa else []:
            for c, pc in enumerate(step_probs([a, b])) if pb else []:
                exact[(a, b, c)] = pa * pb * pc

    class RandomDrafts:
        rng = random.Random(0)

        def propose(self, seqs, rooms):
            return [([self.rng.randrange(vocab) for _ in range(room)], None) for room in rooms]

    method = "draft" if drafter == "draft model" else "ngram"
    llm = LLM(model, tokenizer, EngineConfig(dtype=torch.float64, block_size=4, max_num_seqs=100,
                                             max_num_batched_tokens=512,
                                             speculative=SpeculativeConfig(method=method, num_tokens=2)),
              draft_model=model_for(vocab, ["softmax"], seed=5) if method == "draft" else None)
    if method == "ngram":
        llm.engine.proposer = RandomDrafts()
    counts, total = Counter(), 0
    for seed in range(0, 60_000, 1000):  # sample i of a request draws from seed + i: these streams never overlap
        for out in llm.generate([prompt], SamplingParams(**{**params.__dict__, "seed": seed}))[0].outputs:
            counts[tuple(out.token_ids)] += 1
            total += 1
    assert llm.engine.draft_tokens > 0 and 0 < llm.engine.accepted_tokens < llm.engine.draft_tokens
    stat, dof = statistic(counts, exact, total)
    assert stat < chi_square_limit(dof), (stat, dof)
    uniform_after_first = {(a, b, c): p / vocab**2 for (a,), p in
                           {(a,): sum(v for k, v in exact.items() if k[0] == a) for a in range(vocab)}.items()
                           for b in range(vocab) for c in range(vocab)}
    wrong, dof = statistic(counts, uniform_after_first, total)
    assert wrong > chi_square_limit(dof), (wrong, dof)


def test_server_with_prompt_lookup_answers_as_without(tokenizer):
    model = model_for(tokenizer.vocab_size, ["softmax"]).float()
    answers = []
    for spec in (None, SpeculativeConfig(num_tokens=3, min_ngram=1)):
        engine = LLMEngine(model, tokenizer, EngineConfig(dtype=torch.float32, block_size=4, speculative=spec))
        with ServerThread(OpenAIServer(engine, "tiny")) as server:
            client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
            r = client.completions.create(model="tiny", prompt="x = 1\nx = 1\nx =", max_tokens=12, temperature=0,
                                          extra_body={"ignore_eos": True})
            answers.append(r.choices[0].text)
            text = httpx.get(f"{server.url}/metrics").text
        drafted = float(next(line.split()[-1] for line in text.splitlines()
                             if line.startswith("lmforge_spec_decode_draft_tokens ")))
        assert (drafted > 0) == (spec is not None)
    assert answers[0] == answers[1]
