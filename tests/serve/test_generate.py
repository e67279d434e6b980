import pytest
import torch

from lmforge.config import ModelConfig
from lmforge.errors import GenerationError
from lmforge.model.transformer import Transformer
from lmforge.serve.generate import SamplingParams, generate, parse_token_ids
from lmforge.serve.sampling import sample


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = Transformer(ModelConfig(vocab_size=40, d_model=32, n_layers=2, n_heads=4, n_kv_heads=1, max_seq_len=48))
    with torch.no_grad():  # sharpen the distribution so sampled runs are not just noise
        m.embed.weight.mul_(8)
    return m


@pytest.mark.parametrize("params", [
    SamplingParams(max_new_tokens=30, temperature=0),
    SamplingParams(max_new_tokens=30, temperature=0.9, top_k=10, top_p=0.9, seed=3),
    SamplingParams(max_new_tokens=30, temperature=1.3, seed=7),
])
def test_cached_decode_equals_full_recompute(model, params):
    prompt = [1, 5, 9, 2]
    assert generate(model, prompt, params) == generate(model, prompt, params, use_cache=False)


def test_same_seed_same_tokens_other_seed_differs(model):
    a = generate(model, [3], SamplingParams(max_new_tokens=25, temperature=1.0, seed=1))
    b = generate(model, [3], SamplingParams(max_new_tokens=25, temperature=1.0, seed=1))
    c = generate(model, [3], SamplingParams(max_new_tokens=25, temperature=1.0, seed=2))
    assert a == b and a != c


def test_stops_at_stop_token_and_at_context_end(model):
    greedy = generate(model, [1, 2], SamplingParams(max_new_tokens=20, temperature=0))
    stop = greedy[4]
    out = generate(model, [1, 2], SamplingParams(max_new_tokens=20, temperature=0, stop_ids=(stop,)))
    assert out == greedy[: greedy.index(stop) + 1]
    long = generate(model, list(range(40)), SamplingParams(max_new_tokens=100, temperature=0))
    assert len(long) == 48 - 40


def test_streaming_callback_sees_every_token(model):
    seen = []
    out = generate(model, [4], SamplingParams(max_new_tokens=7, temperature=0), on_token=seen.append)
    assert seen == out and len(out) == 7


@pytest.mark.parametrize("prompt, message", [([], "empty"), ([1, 40], "outside the vocabulary"), ([-1], "outside"),
                                             (list(range(40)) + list(range(8)), "context is 48")])
def test_bad_prompts(model, prompt, message):
    with pytest.raises(GenerationError, match=message):
        generate(model, prompt, SamplingParams())


def test_sampling_rules():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]]).repeat(2000, 1)
    g = torch.Generator().manual_seed(0)
    assert sample(logits, temperature=0).eq(3).all()
    assert set(sample(logits, 1.0, top_k=2, generator=g).tolist()) == {2, 3}
    # top-p 0.6: p = softmax = [.032, .087, .237, .644] -> only token 3 is needed
    assert set(sample(logits, 1.0, top_p=0.6, generator=g).tolist()) == {3}
    assert set(sample(logits, 1.0, top_p=0.7, generator=g).tolist()) == {2, 3}
    freq = sample(logits, 1.0, generator=g).bincount(minlength=4).float() / 2000
    torch.testing.assert_close(freq, logits[0].softmax(-1), atol=0.04, rtol=0)


def test_parse_token_ids():
    assert parse_token_ids("1, 2 3") == [1, 2, 3]
    with pytest.raises(GenerationError):
        parse_token_ids("1,x")
