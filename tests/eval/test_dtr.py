"""Deep-Thinking Ratio: the fast path against the float64 reference, and the meter inside the engine."""

import math

import pytest
import torch

from lmforge.config import ModelConfig
from lmforge.eval.dtr import (DTRConfig, LensHead, binary_jsd_bits, cell_divergence_minimum, jsd_bits, settling_depths,
                              token_signals)
from lmforge.model.transformer import Transformer
from lmforge.serve.engine import EngineConfig, LLMEngine
from lmforge.serve.params import SamplingParams


def model(vocab: int = 300, n_layers: int = 8, **kw) -> Transformer:
    torch.manual_seed(0)
    m = Transformer(ModelConfig(vocab_size=vocab, d_model=32, n_layers=n_layers, n_heads=4, n_kv_heads=2,
                                max_seq_len=96, **kw))
    with torch.no_grad():  # peaked lens distributions, and blocks that move the residual stream, so that
        m.norm.weight.mul_(40)  # settling depths spread over the layers
        for p in m.layers.parameters():
            if p.dim() >= 2:
                p.mul_(3)
    return m.eval()


def drifting_streams(n_layers: int, n: int, d: int, seed: int = 0) -> torch.Tensor:
    """Residual streams [L, N, D] turning towards each token's final direction at a token-specific layer, with
    per-layer noise (so some tokens settle and unsettle again)."""
    g = torch.Generator().manual_seed(seed)
    final, start = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    turn = torch.rand(n, generator=g) * n_layers
    layers = []
    for layer in range(1, n_layers + 1):
        w = torch.sigmoid((layer - turn) * 1.5).unsqueeze(1)
        layers.append(w * final + (1 - w) * start + 0.3 * torch.randn(n, d, generator=g))
    layers[-1] = final
    return torch.stack(layers)


def test_jsd_in_bits_matches_the_formula():
    g = torch.Generator().manual_seed(1)
    p, q = torch.rand(5, 7, generator=g, dtype=torch.float64), torch.rand(5, 7, generator=g, dtype=torch.float64)
    p, q = p / p.sum(1, keepdim=True), q / q.sum(1, keepdim=True)
    m = (p + q) / 2
    expected = 0.5 * (p * (p / m).log2()).sum(1) + 0.5 * (q * (q / m).log2()).sum(1)
    torch.testing.assert_close(jsd_bits(p.log(), q.log()), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(jsd_bits(q.log(), p.log()), expected, rtol=1e-12, atol=1e-12)
    assert float(jsd_bits(p.log()[:1], p.log()[:1])) == pytest.approx(0, abs=1e-12)
    disjoint = torch.tensor([[0.0, -math.inf], [-math.inf, 0.0]], dtype=torch.float64)
    assert float(jsd_bits(disjoint[:1], disjoint[1:])) == pytest.approx(1.0)


def test_binary_jsd_is_the_two_cell_divergence():
    a, b = torch.tensor([0.9, 0.3, 1.0, 0.5], dtype=torch.float64), torch.tensor([0.1, 0.3, 0.0, 0.2], dtype=torch.float64)
    two_cell = jsd_bits(torch.stack([a, 1 - a], 1).log(), torch.stack([b, 1 - b], 1).log())
    torch.testing.assert_close(binary_jsd_bits(a, b), two_cell, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", [1, 8, 64])
def test_divergence_lower_bound_never_exceeds_the_divergence_and_decides_rows(k):
    m = model()
    streams = drifting_streams(m.cfg.n_layers, 300, m.cfg.d_model, seed=5)
    logps = [final_log_probs(m, h) for h in streams]
    exact = torch.stack([jsd_bits(logps[-1], lp) for lp in logps])  # [L, N], float64
    bound = LensHead(m).divergence_lower_bound(streams, logps[-1].float(), k=k)
    assert bound.shape == exact.shape
    assert bool((bound <= exact + 1e-5).all())
    decided = (bound > 0.5) & (exact > 0.5)
    assert float(decided.sum() / (exact > 0.5).sum()) > (0.3 if k > 1 else 0.05)
    cheap = LensHead(m).divergence_lower_bound(streams, logps[-1].float(), k=k, enough=-1)  # the cells never kept
    assert bool((cheap <= exact + 1e-5).all())
    assert int((cheap > 0.5).sum()) < int(decided.sum()) or k == 1  # one cell of S: the two bounds agree


@pytest.mark.parametrize("n_layers, depth, cut", [(30, 0.85, 26), (8, 0.85, 7), (8, 1.0, 8), (10, 0.5, 5), (1, 0.85, 1)])
def test_cut_is_the_ceiling_of_rho_l(n_layers, depth, cut):
    assert DTRConfig(depth=depth).cut(n_layers) == cut


@pytest.mark.parametrize("threshold, depth, max_rows", [(0.5, 0.85, 256), (0.5, 0.85, 23), (0.3, 0.85, 256),
                                                       (0.5, 0.5, 23), (0.7, 1.0, 256), (0.5, 0.1, 256)])
def test_fast_flags_equal_the_float64_reference(threshold, depth, max_rows):
    m = model()
    cfg = DTRConfig(threshold, depth)
    streams = drifting_streams(m.cfg.n_layers, 200, m.cfg.d_model)
    depths = settling_depths(m, list(streams), cfg)
    expected = depths >= cfg.cut(m.cfg.n_layers)
    assert 0.1 < expected.float().mean() < 0.9 or depth <= 0.1  # the streams exercise both outcomes
    assert len(set(depths.tolist())) >= 4
    tokens = torch.randint(0, m.cfg.vocab_size, (streams.shape[1],), generator=torch.Generator().manual_seed(2))
    signals = token_signals(m, streams, tokens, cfg, max_rows=max_rows)
    assert torch.equal(signals.deep, expected)
    logp = final_log_probs(m, streams[-1])
    torch.testing.assert_close(signals.logprob.double(), logp.gather(1, tokens[:, None])[:, 0], rtol=1e-5, atol=1e-5)
    certainty = (-logp - math.log(m.cfg.vocab_size)).mean(1)  # KL(uniform || p), written out
    torch.testing.assert_close(signals.certainty.double(), certainty, rtol=1e-5, atol=1e-5)


def final_log_probs(m: Transformer, hidden: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(m.norm(hidden).double() @ m.output_weight.detach().double().t(), -1)


def test_reference_depth_is_the_first_settled_layer():
    m = model(n_layers=4)
    streams = drifting_streams(4, 50, m.cfg.d_model, seed=3)
    logps = [final_log_probs(m, h) for h in streams]
    for t, depth in enumerate(settling_depths(m, list(streams)).tolist()):
        divergences = [float(jsd_bits(logps[-1][t], lp[t])) for lp in logps]
        assert depth == next(i + 1 for i, d in enumerate(divergences) if d <= 0.5)


def engine_flags(m: Transformer, tokenizer, prompts: list[list[int]], params: SamplingParams):
    """Run the engine with a meter; return each sample's tokens and flags."""
    engine = LLMEngine(m, tokenizer, config=EngineConfig(dtype=torch.float32, block_size=4, max_num_seqs=4,
                                                              max_num_batched_tokens=16, calibrate=False))
    engine.meter.batch_tokens = 5  # evaluated a few tokens at a time, so a step's rows wait for later ones
    requests = [engine.add_request(str(i), p, params) for i, p in enumerate(prompts)]
    summaries = {}
    while engine.has_unfinished():
        for delta in engine.step():
            if delta.finish_reason is not None:
                summaries[delta.request_id, delta.index] = delta.signals
    return [[(seq.token_ids, seq.num_prompt_tokens, summaries[r.request_id, seq.index]) for seq in r.seqs]
            for r in requests]


@pytest.mark.parametrize("n", [1, 3])
def test_engine_reports_each_sample_s_dtr_and_signals_as_the_reference_does(tokenizer, n):
    m = model(vocab=tokenizer.vocab_size)
    prompts = [[5, 9, 11, 3, 7], list(range(10, 31)), [40]]
    params = SamplingParams(temperature=1.0, max_tokens=9, ignore_eos=True, n=n, seed=4, return_dtr=True)
    results = engine_flags(m, tokenizer, prompts, params)
    cfg = DTRConfig()
    seen = []
    for samples in results:
        assert len(samples) == n
        for tokens, n_prompt, summary in samples:
            assert len(tokens) - n_prompt == 9
            with torch.no_grad():
                hiddens = m.hidden_states(torch.tensor([tokens]))[1:]
            rows = [h[0, n_prompt - 1: len(tokens) - 1] for h in hiddens]
            flags = (settling_depths(m, rows, cfg) >= cfg.cut(m.cfg.n_layers)).tolist()
            logp = final_log_probs(m, rows[-1])
            sampled = logp.gather(1, torch.tensor(tokens[n_prompt:])[:, None])[:, 0]
            certainty = (-logp - math.log(m.cfg.vocab_size)).mean(1)
            expected = {"dtr": sum(flags) / 9, "logprob": float(sampled.mean()), "certainty": float(certainty.mean())}
            assert summary == pytest.approx(expected, rel=1e-4, abs=1e-4)
            seen += flags
    assert any(seen)  # the model has deep and shallow tokens, so the comparison means something


def test_cell_divergence_minimum_bounds_the_minimum_over_the_lens_mass():
    g = torch.Generator().manual_seed(4)
    for _ in range(20):
        p = torch.rand(1, 6, generator=g, dtype=torch.float64)
        p = p / p.sum() * float(torch.rand(1, generator=g) * 0.9 + 0.05)  # mass on the top cells; the rest keeps 1 - sum
        split = torch.rand(1, 6, generator=g, dtype=torch.float64).softmax(-1)
        u_max = torch.rand(1, generator=g, dtype=torch.float64) * 0.9 + 0.05
        grid = torch.linspace(1e-9, float(u_max), 20001, dtype=torch.float64)
        cells_p = torch.cat([p, 1 - p.sum(-1, keepdim=True)], -1).expand(len(grid), -1)
        cells_q = torch.cat([grid[:, None] * split, 1 - grid[:, None]], -1)
        minimum = float(jsd_bits(cells_p.log(), cells_q.log()).min())
        bound = float(cell_divergence_minimum(p, split, u_max, steps=6)[0])
        assert minimum - 2e-3 <= bound <= minimum + 1e-9


def test_fast_flags_equal_the_reference_for_a_bf16_model():
    m = model().to(torch.bfloat16)
    streams = drifting_streams(m.cfg.n_layers, 200, m.cfg.d_model).to(torch.bfloat16)
    expected = settling_depths(m, list(streams)) >= DTRConfig().cut(m.cfg.n_layers)
    assert 0.1 < expected.float().mean() < 0.9
    tokens = torch.zeros(streams.shape[1], dtype=torch.long)
    assert torch.equal(token_signals(m, streams, tokens).deep, expected)
