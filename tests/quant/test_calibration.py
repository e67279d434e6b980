"""Calibration data: the default set never overlaps the evaluation split, mixes its domains evenly, is seeded;
the bf16 calibration forward gives GPTQ the Hessians of the float32 one within a stated tolerance."""

import torch
from helpers import tiny_model

from lmforge.eval.perplexity import evaluation_texts
from lmforge.quant.calibration import DEFAULT_CALIBRATION, calibration_set, calibration_sources, sample_texts
from lmforge.quant.quantize import block_linears, capture_inputs


def test_default_calibration_is_disjoint_from_the_default_evaluation_split():
    evaluated = set(evaluation_texts("stdlib"))  # what `lmforge eval perplexity` scores by default
    sources = calibration_sources(DEFAULT_CALIBRATION)
    assert set(sources) == {"code", "prose"}
    assert all(sources.values()) and not evaluated.intersection(*sources.values())


def test_calibration_set_mixes_sources_evenly_and_is_seeded(tokenizer, monkeypatch):
    code = ["def f(x):\n    return x + 1\n" * 50 + f"# {i}\n" for i in range(30)]
    prose = ["The quick brown fox jumps over the lazy dog. " * 40 + f"Page {i}." for i in range(30)]
    monkeypatch.setattr("lmforge.quant.calibration.calibration_sources", lambda spec: {"code": code, "prose": prose})
    windows = calibration_set(tokenizer, "mixed", n_seqs=5, seq_len=16, seed=1)
    assert windows.shape == (5, 16)
    texts = [tokenizer.decode(w.tolist()) for w in windows]
    assert all("return" in t for t in texts[:3]) and not any("return" in t or "def" in t for t in texts[3:])
    assert torch.equal(windows, calibration_set(tokenizer, "mixed", n_seqs=5, seq_len=16, seed=1))
    assert not torch.equal(windows, calibration_set(tokenizer, "mixed", n_seqs=5, seq_len=16, seed=2))


def test_sample_texts_takes_seeded_documents_until_the_size():
    texts = [f"{i:02d}" * 5 for i in range(20)]  # 10 characters each
    chosen = sample_texts(texts, 35, seed=0)
    assert len(chosen) == 4 and len(set(chosen)) == 4 and chosen == sample_texts(texts, 35, seed=0)
    assert sorted(sample_texts(texts, 10**6, seed=0)) == sorted(texts)


@torch.no_grad()
def test_bf16_calibration_forward_gives_the_float32_hessians_within_two_percent():
    torch.manual_seed(0)
    block = tiny_model(512).layers[0]
    hidden = [torch.randn(4, 48, block.mixer_norm.weight.shape[0]) for _ in range(2)]
    positions = torch.arange(48).expand(4, -1)
    names = list(block_linears(block))
    exact, out32 = capture_inputs(block, names, hidden, positions, keep=False, bf16=False)
    fast, out16 = capture_inputs(block, names, hidden, positions, keep=False, bf16=True)
    for n in names:
        h32, h16 = exact[n].h, fast[n].h
        assert float((h16 - h32).norm() / h32.norm()) < 2e-2, n
    for a, b in zip(out32, out16):
        assert b.dtype == torch.float32 and float((a - b).norm() / a.norm()) < 2e-2
