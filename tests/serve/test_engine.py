"""The engine end to end on tiny models: every output checked against recomputing the whole sequence."""

import random

import pytest
import torch

from lmforge.config import ModelConfig
from lmforge.errors import GenerationError
from lmforge.model.transformer import Transformer
from lmforge.serve.engine import EngineConfig, LLMEngine
from lmforge.serve.llm import LLM, build_prompt, parse_token_ids
from lmforge.serve.params import SamplingParams

MIXERS = [["softmax"], ["sparse"], ["mamba2s"], ["2mamba_e"], ["2mamba", "softmax"]]


def tiny(vocab: int, mixers=("softmax",), **kw) -> Transformer:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=vocab, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, mixers=list(mixers),
                      max_seq_len=96, linear_chunk_size=8, second_order_chunk_size=8, sparse_block_q=8,
                      sparse_block_k=8, sparse_top_k=0.3, sparse_top_p=0.4, **kw)
    m = Transformer(cfg).to(torch.float64)
    with torch.no_grad():  # a peaked distribution, so greedy ties do not happen and samples are not noise
        m.embed.weight.mul_(12)
    return m


def config(**kw) -> EngineConfig:
    return EngineConfig(**{"dtype": torch.float64, "block_size": 4, "max_num_batched_tokens": 24, **kw})


def reference_greedy(model: Transformer, prompt: list[int], n: int, stop: int | None) -> list[int]:
    """The obviously correct loop: recompute the whole sequence for every token."""
    tokens = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(torch.tensor([tokens]))[0, -1].argmax())
            tokens.append(nxt)
            if nxt == stop or len(tokens) == model.cfg.max_seq_len:
                break
    return tokens[len(prompt):]


def prompts(k: int, seed: int = 0, vocab: int = 300) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, vocab) for _ in range(rng.randint(1, 30))] for _ in range(k)]


@pytest.mark.parametrize("mixers", MIXERS, ids="+".join)
def test_greedy_batch_equals_recompute(tokenizer, mixers):
    model = tiny(tokenizer.vocab_size, mixers)
    llm = LLM(model, tokenizer, config(max_num_seqs=5))
    batch = prompts(9)
    outs = llm.generate(batch, SamplingParams(temperature=0, max_tokens=12))
    for prompt, out in zip(batch, outs):
        expected = reference_greedy(model, prompt, 12, tokenizer.eos_id)
        assert out.outputs[0].token_ids == expected
        assert out.outputs[0].finish_reason == ("stop" if expected[-1] == tokenizer.eos_id else "length")


def test_seeded_request_does_not_depend_on_the_batch(tokenizer):
    model = tiny(tokenizer.vocab_size)
    params = SamplingParams(temperature=1.0, top_p=0.9, max_tokens=20, seed=42, ignore_eos=True)
    alone = LLM(model, tokenizer, config()).generate([[5, 6, 7]], params)[0].outputs[0].token_ids
    others = [SamplingParams(temperature=t, max_tokens=15, ignore_eos=True, top_k=k) for t, k in ((0.7, 5), (1.3, 0), (0, 0))]
    crowd = LLM(model, tokenizer, config()).generate(prompts(3, seed=5) + [[5, 6, 7]], others + [params])
    assert crowd[-1].outputs[0].token_ids == alone
    unseeded = SamplingParams(temperature=1.0, max_tokens=20, seed=43, ignore_eos=True)
    assert LLM(model, tokenizer, config()).generate([[5, 6, 7]], unseeded)[0].outputs[0].token_ids != alone


def test_preemption_under_a_tiny_cache_gives_the_unpreempted_output(tokenizer):
    model = tiny(tokenizer.vocab_size)
    batch = prompts(6, seed=3)
    params = [SamplingParams(temperature=0.8, seed=i, max_tokens=15, ignore_eos=True) for i in range(6)]
    roomy = LLM(model, tokenizer, config()).generate(batch, params)
    block_bytes = 4 * sum(s.token_bytes() for s in model.cache_specs(torch.float64, 4))
    cramped = LLM(model, tokenizer, config(kv_cache_memory=12 * block_bytes))  # 48 tokens: the longest needs 45
    outs = cramped.generate(batch, params)
    assert cramped.engine.scheduler.num_preemptions > 0
    assert [o.outputs[0].token_ids for o in outs] == [o.outputs[0].token_ids for o in roomy]
    assert cramped.engine.blocks.num_free_blocks == cramped.engine.plan.num_blocks


def test_n_samples_share_the_prompt_and_are_each_reproducible(tokenizer):
    model = tiny(tokenizer.vocab_size)
    llm = LLM(model, tokenizer, config())
    out = llm.generate([[9, 8, 7, 6, 5]], SamplingParams(n=3, temperature=1.0, seed=11, max_tokens=10, ignore_eos=True))[0]
    samples = [o.token_ids for o in out.outputs]
    assert len(set(map(tuple, samples))) == 3
    for i, sample in enumerate(samples):  # sample i is the request with seed + i alone
        single = llm.generate([[9, 8, 7, 6, 5]], SamplingParams(temperature=1.0, seed=11 + i, max_tokens=10, ignore_eos=True))
        assert single[0].outputs[0].token_ids == sample


def test_prefix_cache_reuses_a_shared_prompt(tokenizer):
    model = tiny(tokenizer.vocab_size)
    llm = LLM(model, tokenizer, config())
    system = list(range(10, 40))
    first = llm.generate([system + [50]], SamplingParams(temperature=0, max_tokens=5))[0]
    second = llm.generate([system + [51]], SamplingParams(temperature=0, max_tokens=5))[0]
    assert first.num_cached_tokens == 0 and second.num_cached_tokens == 28  # 7 full blocks of 4
    assert second.outputs[0].token_ids == reference_greedy(model, system + [51], 5, tokenizer.eos_id)


def test_linear_models_keep_prefix_caching_off(tokenizer):
    llm = LLM(tiny(tokenizer.vocab_size, ["mamba2s"]), tokenizer, config())
    assert not llm.engine.prefix_caching and llm.engine.plan.num_slots == llm.engine.config.max_num_seqs


def test_stop_strings_stop_tokens_and_limits(tokenizer):
    model = tiny(tokenizer.vocab_size)
    llm = LLM(model, tokenizer, config())
    free = llm.generate([[3, 4]], SamplingParams(temperature=0, max_tokens=30, ignore_eos=True))[0].outputs[0]
    stop_id = free.token_ids[5]
    by_id = llm.generate([[3, 4]], SamplingParams(temperature=0, max_tokens=30, ignore_eos=True, stop_token_ids=[stop_id]))
    assert by_id[0].outputs[0].token_ids == free.token_ids[: free.token_ids.index(stop_id) + 1]
    assert by_id[0].outputs[0].finish_reason == "stop"
    text = free.text
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    if stop.strip():
        by_text = llm.generate([[3, 4]], SamplingParams(temperature=0, max_tokens=30, ignore_eos=True, stop=[stop]))[0].outputs[0]
        assert by_text.text == text[: text.index(stop)] and by_text.finish_reason == "stop"
    full = llm.generate([list(range(5, 90))], SamplingParams(temperature=0, max_tokens=None, ignore_eos=True))[0].outputs[0]
    assert len(full.token_ids) == 96 - 85 and full.finish_reason == "length"


def test_prompt_logprobs_equal_the_model_distribution(tokenizer):
    model = tiny(tokenizer.vocab_size)
    llm = LLM(model, tokenizer, config(max_num_batched_tokens=7))  # the prompt spans several chunks
    prompt = prompts(1, seed=9)[0] + list(range(40, 60))
    out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=2, logprobs=1))[0]
    with torch.no_grad():
        logp = model(torch.tensor([prompt]))[0].double().log_softmax(-1)
    assert out.prompt_logprobs[0] == (prompt[0], None, [])
    assert len(out.prompt_logprobs) == len(prompt)
    for t, (token, lp, top) in enumerate(out.prompt_logprobs[1:], start=1):
        assert token == prompt[t]
        assert lp == pytest.approx(float(logp[t - 1, token]), abs=1e-6)
        assert [a for a, _ in top] == logp[t - 1].topk(2).indices.tolist()
    token, lp, _ = out.outputs[0].logprobs[0]
    assert lp == pytest.approx(float(logp[-1, token]), abs=1e-6)


def test_observer_sees_every_layer_at_the_sampled_positions(tokenizer):
    model = tiny(tokenizer.vocab_size)
    llm = LLM(model, tokenizer, config())
    seen: dict[int, list[torch.Tensor]] = {}
    llm.engine.observer = lambda seq, layer, hidden: seen.setdefault(layer, []).append(hidden)
    prompt = [7, 8, 9, 10, 11]
    out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))[0].outputs[0]
    with torch.no_grad():
        dense = model.hidden_states(torch.tensor([prompt + out.token_ids]))
    assert sorted(seen) == list(range(model.cfg.n_layers + 1))
    for layer, rows in seen.items():
        got = torch.cat(rows)  # one row per sampled token: the prompt's last position, then each decoded one
        torch.testing.assert_close(got, dense[layer][0, len(prompt) - 1 : len(prompt) + 2], rtol=0, atol=1e-9)


def test_abort_frees_everything_at_once(tokenizer):
    engine = LLMEngine(tiny(tokenizer.vocab_size), tokenizer, config())
    start = engine.blocks.num_free_blocks
    for i, p in enumerate(prompts(4)):
        engine.add_request(str(i), p, SamplingParams(max_tokens=50, ignore_eos=True, n=2))
    for _ in range(3):
        engine.step()
    assert engine.blocks.num_free_blocks < start
    for i in range(4):
        engine.abort(str(i))
    assert engine.blocks.num_free_blocks == start and not engine.has_unfinished()


@pytest.mark.parametrize("prompt, message", [([], "empty"), ([1, 10**6], "outside the vocabulary"), ([-1], "outside"),
                                             (list(range(96)), "context is 96")])
def test_bad_prompts(tokenizer, prompt, message):
    engine = LLMEngine(tiny(tokenizer.vocab_size), tokenizer, config())
    with pytest.raises(GenerationError, match=message):
        engine.add_request("x", prompt, SamplingParams())


def test_a_prompt_larger_than_the_whole_cache_is_refused(tokenizer):
    model = tiny(tokenizer.vocab_size)
    block_bytes = 4 * sum(s.token_bytes() for s in model.cache_specs(torch.float64, 4))
    engine = LLMEngine(model, tokenizer, config(kv_cache_memory=5 * block_bytes))
    with pytest.raises(GenerationError, match="cache holds 20"):
        engine.add_request("x", list(range(3, 30)), SamplingParams())


def test_prompt_helpers(tokenizer):
    assert parse_token_ids("1, 2 3") == [1, 2, 3]
    with pytest.raises(GenerationError):
        parse_token_ids("1,x")
    assert build_prompt(tokenizer) == [tokenizer.eos_id]
    assert build_prompt(tokenizer, text="def f") == tokenizer.encode("def f")
    assert build_prompt(tokenizer, chat="hi")[-1] != tokenizer.eos_id
