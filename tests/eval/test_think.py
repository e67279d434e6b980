"""Think@n inside the engine: who is kept, what is stopped and freed, what is counted, how the vote goes."""

import pytest
import torch
from test_dtr import model

from lmforge.errors import GenerationError
from lmforge.eval.think import majority, replay, think_at_n
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
    params = SamplingParams(n=6, temperature=1.0, max_tokens=12, ignore_eos=True, seed=3, think=rule, think_prefix=4)
    votes = think_at_n(eng, PROMPTS, params, extract=first_letter)
    assert eng.blocks.num_free_blocks == free and not eng.has_unfinished()
    for vote in votes:
        kept = [s for s in vote.samples if s.kept]
        rejected = [s for s in vote.samples if not s.kept]
        assert len(kept) == 3 and len(rejected) == 3
        assert min(s.score for s in kept) >= max(s.score for s in rejected)
        assert all(s.tokens == 12 for s in kept) and all(s.tokens == 4 and s.finish_reason == "abort" for s in rejected)
        assert vote.tokens == 3 * 12 + 3 * 4
        assert all(s.answer is None for s in rejected)
        assert vote.answer == majority([s.answer for s in kept])


def test_the_dtr_score_is_the_prefix_share_of_deep_tokens(tokenizer):
    params = SamplingParams(n=4, temperature=1.0, max_tokens=8, ignore_eos=True, seed=1)
    judged = think_at_n(engine(tokenizer), PROMPTS[:1], SamplingParams(**{**vars(params), "think": "dtr",
                                                                          "think_prefix": 5, "think_keep": 1.0}))[0]
    eng = engine(tokenizer)  # the same seeds, no rule: the same samples, each with its per-token signals
    request = eng.add_request("again", PROMPTS[0], SamplingParams(**{**vars(params), "return_dtr": True}))
    while eng.has_unfinished():
        eng.step()
        seqs = sorted(request.seqs, key=lambda q: q.index)
        if seqs and all(q.num_output_tokens >= 5 for q in seqs) and len(seqs) == 4:
            flags = [eng.meter.flags(q)[:5] for q in seqs]
    for s, f in zip(judged.samples, flags):
        assert s.kept and s.score == pytest.approx(sum(f) / 5)


def test_samples_finishing_before_the_decision_wait_for_it(tokenizer):
    eng = engine(tokenizer)
    stops = list(range(3, tokenizer.vocab_size, 6))  # about one token in six ends a sample
    params = SamplingParams(n=8, temperature=1.0, max_tokens=30, stop_token_ids=stops, seed=5, think="logprob",
                            think_prefix=6, return_dtr=True)
    votes = think_at_n(eng, PROMPTS, params, extract=first_letter)
    early = [s for v in votes for s in v.samples if s.finish_reason == "stop" and s.tokens < 6]
    assert early  # some samples ended inside the prefix: they are judged too, on what they have
    for vote in votes:
        assert sum(s.kept for s in vote.samples) == 4
        assert all(s.score is not None and s.dtr is not None for s in vote.samples)


def test_length_keeps_the_first_to_finish(tokenizer):
    eng = engine(tokenizer)
    stops = list(range(3, tokenizer.vocab_size, 6))
    params = SamplingParams(n=8, temperature=1.0, max_tokens=40, stop_token_ids=stops, seed=5, think="length",
                            think_keep=0.25)
    for vote in think_at_n(eng, PROMPTS, params, extract=first_letter):
        kept = [s for s in vote.samples if s.kept]
        assert len(kept) >= 2 and all(s.finish_reason == "stop" for s in kept)
        assert max(s.tokens for s in kept) <= min(s.tokens for s in vote.samples if not s.kept)


@pytest.mark.parametrize("rule, keep", [("dtr", 0.5), ("logprob", 0.5), ("certainty", 0.25), ("length", 0.5),
                                        ("length", 0.25), ("all", 0.5)])
def test_replay_over_full_samples_is_the_engine_s_think_at_n(tokenizer, rule, keep):
    stops = list(range(3, tokenizer.vocab_size, 6))  # samples end at different lengths, some inside the prefix
    base = dict(n=8, temperature=1.0, max_tokens=30, stop_token_ids=stops, seed=5, think_prefix=6)
    judged = think_at_n(engine(tokenizer), PROMPTS, SamplingParams(**base, think=rule, think_keep=keep),
                        extract=first_letter)
    full = think_at_n(engine(tokenizer), PROMPTS, SamplingParams(**base, return_dtr=True), extract=first_letter)
    for engine_vote, samples in zip(judged, full):
        replayed = replay(samples.samples, rule, keep, 6)
        assert [s.kept for s in replayed.samples] == [s.kept for s in engine_vote.samples]
        assert [s.tokens for s in replayed.samples] == [s.tokens for s in engine_vote.samples]
        assert replayed.answer == engine_vote.answer and replayed.tokens == engine_vote.tokens
    assert any(not s.kept for v in judged for s in v.samples) or rule == "all"


def test_the_vote_is_the_majority_of_given_answers():
    assert majority([3, 4, 4, None]) == 4
    assert majority([3, 4, None, None]) == 3  # a tie goes to the first answer given
    assert majority([None]) is None


def test_bad_settings_are_refused():
    with pytest.raises(GenerationError, match="unknown think rule"):
        SamplingParams(n=2, think="vibes")
    with pytest.raises(GenerationError, match="n of at least 2"):
        SamplingParams(n=1, think="dtr")
    with pytest.raises(GenerationError, match="think_keep"):
        SamplingParams(n=2, think="dtr", think_keep=0)
