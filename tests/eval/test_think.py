"""Think@n inside the engine: who is kept, what is stopped and freed, what is counted, how the vote goes."""

import pytest
import torch
from test_dtr import model

from lmforge.eval.dtr import DeepThinkingMeter
from lmforge.eval.think import Sample, majority, think_at_n
from lmforge.serve.engine import EngineConfig, LLMEngine
from lmforge.serve.params import SamplingParams

PROMPTS = [[5, 9, 11, 3, 7], list(range(10, 31))]


def engine(tokenizer) -> LLMEngine:
    return LLMEngine(model(vocab=tokenizer.vocab_size), tokenizer,
                     EngineConfig(dtype=torch.float32, block_size=4, max_num_seqs=16, max_num_batched_tokens=64,
                                  calibrate=False))


def first_letter(text: str):
    return text[:1] or None


@pytest.mark.parametrize("rule", ["dtr", "logprob", "certainty"])
def test_prefix_rules_keep_the_best_scores_and_free_the_rest(tokenizer, rule):
    eng = engine(tokenizer)
    free = eng.blocks.num_free_blocks
    meter = DeepThinkingMeter(eng.model)
    params = SamplingParams(n=6, temperature=1.0, max_tokens=12, ignore_eos=True, seed=3)
    votes = think_at_n(eng, PROMPTS, params, rule, prefix=4, keep=0.5, extract=first_letter, meter=meter)
    assert eng.blocks.num_free_blocks == free and not eng.has_unfinished()
    for vote in votes:
        kept = [s for s in vote.samples if s.kept]
        rejected = [s for s in vote.samples if not s.kept]
        assert len(kept) == 3 and len(rejected) == 3
        assert min(s.score for s in kept) >= max(s.score for s in rejected)
        assert all(s.tokens == 12 for s in kept) and all(s.tokens == 4 for s in rejected)
        assert vote.tokens == 3 * 12 + 3 * 4
        assert all(s.answer is None for s in rejected)
        assert vote.answer == majority(vote.samples)


def test_the_dtr_score_is_the_prefix_share_of_deep_tokens(tokenizer):
    params = SamplingParams(n=4, temperature=1.0, max_tokens=8, ignore_eos=True, seed=1)
    eng2 = engine(tokenizer)
    meter2 = DeepThinkingMeter(eng2.model)
    scored = think_at_n(eng2, PROMPTS[:1], params, "dtr", prefix=5, keep=1.0, meter=meter2)[0]
    request = eng2.add_request("again", PROMPTS[0], params)  # the same seeds: the same samples
    eng2.observer = meter2
    while eng2.has_unfinished():
        eng2.step()
    for s, seq in zip(scored.samples, sorted(request.seqs, key=lambda q: q.index)):
        flags = meter2.flags(seq)
        assert s.kept and s.score == pytest.approx(sum(flags[:5]) / 5)


def test_length_keeps_the_first_to_finish(tokenizer):
    eng = engine(tokenizer)
    stops = list(range(3, tokenizer.vocab_size, 6))  # about one token in six ends a sample
    params = SamplingParams(n=8, temperature=1.0, max_tokens=40, stop_token_ids=stops, seed=5)
    votes = think_at_n(eng, PROMPTS, params, "length", keep=0.25, extract=first_letter)
    for vote in votes:
        kept = [s for s in vote.samples if s.kept]
        assert len(kept) >= 2 and all(s.finish_reason is not None for s in kept)
        assert max(s.tokens for s in kept) <= min(s.tokens for s in vote.samples if not s.kept)


def test_the_vote_is_the_majority_of_kept_answers():
    samples = [Sample(0, answer=3), Sample(1, answer=4), Sample(2, answer=4), Sample(3, answer=None)]
    assert majority(samples) == 4
    samples[2].kept = False
    assert majority(samples) == 3  # a tie goes to the first answer given
    assert majority([Sample(0)]) is None


def test_bad_settings_are_refused(tokenizer):
    eng = engine(tokenizer)
    with pytest.raises(ValueError, match="unknown rule"):
        think_at_n(eng, PROMPTS, SamplingParams(n=2), "vibes")
    with pytest.raises(ValueError, match="keep"):
        think_at_n(eng, PROMPTS, SamplingParams(n=2), "dtr", keep=0)
