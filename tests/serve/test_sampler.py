import pytest
import torch

from lmforge.serve.params import SamplingParams
from lmforge.serve.sampler import (
    Sampler,
    apply_penalties,
    apply_penalties_reference,
    make_generator,
    prompt_logprobs,
    sampling_probs,
    sampling_probs_reference,
)
from lmforge.serve.sequence import Sequence

V = 64
SETTINGS = [
    SamplingParams(temperature=0),
    SamplingParams(temperature=0, top_k=3, repetition_penalty=1.5, logit_bias={7: 4.0}),
    SamplingParams(temperature=1.0),
    SamplingParams(temperature=0.7, top_k=5),
    SamplingParams(temperature=1.3, top_p=0.8),
    SamplingParams(temperature=0.9, min_p=0.05),
    SamplingParams(temperature=1.1, top_k=20, top_p=0.9, min_p=0.02),
    SamplingParams(temperature=0.8, repetition_penalty=1.3, presence_penalty=0.5, frequency_penalty=0.7),
    SamplingParams(temperature=1.0, top_p=0.6, frequency_penalty=-1.0, logit_bias={3: 5.0, 9: -100.0}),
    SamplingParams(temperature=2.0, top_k=1),
]


def seq(params, prompt=(1, 2, 3, 2), output=(5, 5, 9, 2, 60), seed=None):
    s = Sequence(list(prompt) + list(output), params, num_prompt_tokens=len(prompt))
    s.generator = make_generator(seed if seed is not None else params.seed or 0)
    return s


def batch(settings=SETTINGS, rows_per_setting=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    seqs = [seq(p, seed=i) for i, p in enumerate(s for s in settings for _ in range(rows_per_setting))]
    logits = torch.randn(len(settings), V, generator=g, dtype=torch.float64) * 3
    return logits.repeat_interleave(rows_per_setting, dim=0), seqs


def test_penalties_and_bias_equal_the_reference_in_float64():
    logits, seqs = batch()
    fast = apply_penalties(logits, seqs)
    for row, s in zip(range(len(seqs)), seqs):
        torch.testing.assert_close(fast[row], apply_penalties_reference(logits[row], s), rtol=1e-12, atol=1e-12)
    assert not torch.equal(fast, logits)


TOP_K_ONLY = [p for p in SETTINGS if p.top_p == 1]  # no row needs the sort: the cheaper top-k path


@pytest.mark.parametrize("settings", [SETTINGS, TOP_K_ONLY], ids=["sort", "topk"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_distribution_equals_the_reference(dtype, settings):
    logits, seqs = batch(settings, seed=1)
    fast = sampling_probs(apply_penalties(logits.to(dtype), seqs), seqs).double()
    for row, s in enumerate(seqs):
        ref = sampling_probs_reference(logits[row], s)
        if s.params.greedy:
            continue  # the sampler takes the argmax (tested below); its distribution is unused
        assert torch.equal(fast[row] > 0, ref > 0), s.params  # the same tokens can be sampled
        tol = 1e-12 if dtype == torch.float64 else 1e-6
        torch.testing.assert_close(fast[row], ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("top_p", [1.0, 0.999], ids=["topk", "sort"])
def test_top_k_keeps_ties_with_the_kth_logit(top_p):
    logits = torch.full((1, V), -20.0)
    logits[0, :5] = torch.tensor([3.0, 2.0, 2.0, 2.0, 1.0])
    s = seq(SamplingParams(top_k=2, top_p=top_p))
    assert (sampling_probs(logits, [s])[0] > 0).nonzero().flatten().tolist() == [0, 1, 2, 3]
    assert torch.equal(sampling_probs_reference(logits[0], s) > 0, sampling_probs(logits, [s])[0] > 0)


def test_settings_actually_cut_the_vocabulary():
    logits, seqs = batch(seed=1)
    support = [int((sampling_probs_reference(logits[r], s) > 0).sum()) for r, s in enumerate(seqs)]
    assert support[2] == V and support[9] == 1 and support[3] == 5
    assert all(1 < n < V for n in support[4:7]) and support[8] < V - 1


def test_sampled_frequencies_match_the_reference_distribution():
    draws = 3000
    settings = SETTINGS[2:]
    logits, seqs = batch(settings, rows_per_setting=draws, seed=2)
    logits = logits / 3  # flatter, so many tokens have visible probability
    tokens = torch.tensor(Sampler()(logits, seqs).tokens).view(len(settings), draws)
    for i, s in enumerate(settings):
        ref = sampling_probs_reference(logits[i * draws], seqs[i * draws])
        freq = torch.bincount(tokens[i], minlength=V).double() / draws
        assert (freq[ref == 0] == 0).all(), s  # nothing outside the support
        assert (freq - ref).abs().max() < 0.04, s  # about 5 standard deviations of a frequency


def test_greedy_is_the_argmax_after_bias_and_penalties():
    logits, seqs = batch(seed=3)
    logits[1] = 0
    logits[1, [2, 11, 7]] = torch.tensor([6.3, 4.1, 0.5], dtype=logits.dtype)  # 2 was seen: 6.3 / 1.5 = 4.2 < 0.5 + 4
    out = Sampler()(logits, seqs)
    for row, s in enumerate(seqs):
        if s.params.greedy:
            assert out.tokens[row] == int(apply_penalties_reference(logits[row], s).argmax())
    assert out.tokens[:2] == [int(logits[0].argmax()), 7]


def run_alone_and_in_batch(params, steps=40):
    """Tokens of a seeded request sampled alone, and as row 3 of a batch of 8 with other settings."""
    g = torch.Generator().manual_seed(4)
    logits = [torch.randn(8, V, generator=g) for _ in range(steps)]
    alone = Sequence([1, 2, 3], params)
    others = [Sequence([4 + i] * (i + 1), p) for i, p in enumerate(SETTINGS[2:9])]
    together = others[:3] + [Sequence([1, 2, 3], params)] + others[3:]
    sampler = Sampler()
    for step in logits:
        alone.append(sampler(step[3:4], [alone]).tokens[0])
        for s, t in zip(together, sampler(step, together).tokens):
            s.append(t)
    return alone.output, together[3].output


@pytest.mark.parametrize("params", [
    SamplingParams(temperature=1.0, seed=11),
    SamplingParams(temperature=0.8, top_p=0.9, top_k=30, repetition_penalty=1.2, frequency_penalty=0.3, seed=12),
])
def test_seeded_request_gets_the_same_tokens_whatever_the_batch(params):
    alone, batched = run_alone_and_in_batch(params)
    assert alone == batched
    assert len(set(alone)) > 5  # really sampled, not a constant


def test_seeds_and_sample_index_give_distinct_reproducible_streams():
    draw = lambda g: torch.empty(8).exponential_(generator=g).tolist()  # noqa: E731
    assert draw(make_generator(5)) == draw(make_generator(5))
    assert draw(make_generator(5)) != draw(make_generator(6))
    assert draw(make_generator(5, index=1)) == draw(make_generator(6)) != draw(make_generator(5))
    torch.manual_seed(0)
    first = draw(make_generator(None))
    torch.manual_seed(0)
    assert draw(make_generator(None)) == first  # unseeded requests follow the global seed


def test_logprobs_are_those_of_the_raw_model_distribution():
    logits, seqs = batch(seed=5)
    logits = logits.float()
    wanted = [None, 0, 3, 5, None, 2, 1, 4, 20, 0]
    for s, k in zip(seqs, wanted):
        s.params.logprobs = k
    out = Sampler()(logits, seqs)
    raw = logits.log_softmax(dim=-1)
    for row, k in enumerate(wanted):
        if k is None:
            assert out.logprobs[row] is None and out.top_logprobs[row] is None
            continue
        assert out.logprobs[row] == pytest.approx(raw[row, out.tokens[row]].item(), abs=1e-6)
        top = raw[row].topk(k)
        assert [t for t, _ in out.top_logprobs[row]] == top.indices.tolist()
        assert [lp for _, lp in out.top_logprobs[row]] == pytest.approx(top.values.tolist(), abs=1e-6)


def test_prompt_logprobs():
    g = torch.Generator().manual_seed(6)
    logits, next_ids = torch.randn(7, V, generator=g), torch.randint(V, (7,), generator=g)
    out = prompt_logprobs(logits, next_ids, top_n=3)
    raw = logits.log_softmax(dim=-1)
    for t, (lp, top) in enumerate(out):
        assert lp == pytest.approx(raw[t, next_ids[t]].item(), abs=1e-6)
        assert [i for i, _ in top] == raw[t].topk(3).indices.tolist()
        assert [v for _, v in top] == pytest.approx(raw[t].topk(3).values.tolist(), abs=1e-6)


def test_top_p_one_keeps_every_token_of_a_large_vocabulary():
    logits = torch.randn(3, 50_000, generator=torch.Generator().manual_seed(7)) * 4
    params = [SamplingParams(), SamplingParams(top_k=40_000), SamplingParams(top_p=0.9)]  # row 2 forces the sort
    probs = sampling_probs(logits, [seq(p) for p in params])
    assert (probs[0] > 0).all() and int((probs[1] > 0).sum()) == 40_000 and int((probs[2] > 0).sum()) < 40_000


def test_a_sequence_without_a_generator_gets_one_from_its_seed():
    logits = torch.randn(1, V, generator=torch.Generator().manual_seed(8))
    a, b = Sequence([1], SamplingParams(seed=3)), Sequence([1], SamplingParams(seed=3))
    tokens = [Sampler()(logits, [s]).tokens for s in (a, b) for _ in range(5)]
    assert a.generator is not None and tokens[:5] == tokens[5:]
