"""Structured outputs: grammar masks against a bit-by-bit reference, the masked sampler against the float64
reference, and the engine's constrained outputs parsed and validated on many schemas."""

import json
import random
import re

import jsonschema
import pytest
import torch
from helpers import tiny_model

from lmforge.errors import GenerationError
from lmforge.serve.engine import EngineConfig
from lmforge.serve.llm import LLM
from lmforge.serve.params import SamplingParams
from lmforge.serve.sampler import Sampler, sampling_probs, apply_constraints, apply_penalties, sampling_probs_reference
from lmforge.serve.sequence import Sequence
from lmforge.serve.structured import Constraint, GrammarCache, allowed_tokens, allowed_tokens_reference

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "score": {"type": "number", "minimum": -1, "maximum": 1},
        "tags": {"type": "array", "items": {"enum": ["x", "y", "z"]}, "maxItems": 3},
        "address": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8},
                                                     "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                    "required": ["city", "zip"], "additionalProperties": False},
    },
    "required": ["name", "age", "score", "tags", "address"],
    "additionalProperties": False,
}
SCHEMAS = [
    PERSON,
    {"type": "array", "items": {"type": "integer", "minimum": -50, "maximum": 50}, "minItems": 2, "maxItems": 4},
    {"enum": ["red", "green", 7, None, True]},
    {"type": "object", "properties": {"kind": {"const": "point"}, "xy": {"type": "array", "prefixItems": [
        {"type": "number", "minimum": 0, "maximum": 9}, {"type": "number", "minimum": 0, "maximum": 9}],
        "items": False, "minItems": 2}}, "required": ["kind", "xy"], "additionalProperties": False},
    {"type": "object", "properties": {"items": {"type": "array", "maxItems": 2, "items": {
        "type": "object", "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 999},
                                         "done": {"type": "boolean"}},
        "required": ["id", "done"], "additionalProperties": False}}},
     "required": ["items"], "additionalProperties": False},
    {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 9}, {"type": "string", "enum": ["none", "many"]}]},
    {"type": "object", "properties": {"when": {"type": "string", "pattern": "^20[0-9]{2}-[01][0-9]$"},
                                      "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1}},
     "required": ["when", "ratio"], "additionalProperties": False},
]


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_model(tokenizer.vocab_size, max_seq_len=512)


@pytest.fixture(scope="module")
def llm(model, tokenizer):
    return LLM(model, tokenizer, EngineConfig(dtype=torch.float32, block_size=4, max_num_seqs=8))


@pytest.fixture(scope="module")
def grammars(tokenizer):
    return GrammarCache(tokenizer, tokenizer.vocab_size)


def walk(grammars, constraint: Constraint, text: str, tokenizer):
    """A matcher after each prefix of `text`'s tokens."""
    matcher = grammars.matcher(constraint)
    yield matcher.deep_copy()
    for token in tokenizer.encode(text):
        assert matcher.consume_token(token), matcher.get_error()
        yield matcher.deep_copy()


def test_masks_equal_the_bit_by_bit_reference(grammars, tokenizer):
    vocab = tokenizer.vocab_size
    text = json.dumps({"name": "Ada", "age": 36, "score": 0.5, "tags": ["x"], "address": {"city": "Rome", "zip": "00100"}})
    matchers = list(walk(grammars, Constraint.json_schema(PERSON), text, tokenizer))
    rows = [*matchers[::3], None]  # an unconstrained row allows everything
    allowed = allowed_tokens(rows, vocab)
    assert allowed.shape == (len(rows), vocab)
    for row, matcher in zip(allowed, rows):
        expected = set(range(vocab)) if matcher is None else allowed_tokens_reference(matcher, vocab)
        assert set(torch.nonzero(row)[:, 0].tolist()) == expected
    assert allowed_tokens([None, None], vocab) is None


def test_mask_covers_a_vocabulary_wider_than_the_tokenizer(tokenizer):
    wide = GrammarCache(tokenizer, tokenizer.vocab_size + 45)
    allowed = allowed_tokens([wide.matcher(Constraint("regex", "[a-z]+"))], tokenizer.vocab_size + 45)
    assert allowed.shape[1] == tokenizer.vocab_size + 45 and not allowed[0, tokenizer.vocab_size:].any()


def test_masked_sampler_equals_the_reference(grammars, tokenizer):
    torch.manual_seed(0)
    vocab = tokenizer.vocab_size
    constraint = Constraint.json_schema(SCHEMAS[1])
    settings = [dict(temperature=0.7, top_k=20, repetition_penalty=1.3), dict(temperature=1.0, top_p=0.8, min_p=0.05),
                dict(temperature=0), dict(temperature=1.2, frequency_penalty=0.5)]
    seqs = []
    for i, kw in enumerate(settings):
        seq = Sequence(tokenizer.encode("[1, 2") + [5, 9], SamplingParams(**kw), num_prompt_tokens=3)
        if i != 3:  # the last row is free, in the same batch
            seq.matcher = grammars.matcher(constraint)
            seq.matcher.consume_tokens(tokenizer.encode("[1, "))
        seqs.append(seq)
    logits = torch.randn(len(seqs), vocab, dtype=torch.float64) * 3
    fast = sampling_probs(apply_penalties(apply_constraints(logits, seqs), seqs), seqs)
    for row, seq in enumerate(seqs):
        ref = sampling_probs_reference(logits[row], seq)
        if seq.params.greedy:
            assert int(ref.argmax()) == int(Sampler()(logits[row: row + 1], [seq]).tokens[0])
        else:
            torch.testing.assert_close(fast[row], ref, rtol=1e-12, atol=1e-12)
        if seq.matcher is not None:
            assert set(torch.nonzero(ref)[:, 0].tolist()) <= allowed_tokens_reference(seq.matcher, vocab)
    assert (fast[3] > 0).sum() > 100  # the free row kept its whole nucleus


@pytest.mark.parametrize("index", range(len(SCHEMAS)))
def test_sampled_outputs_parse_and_validate(llm, tokenizer, index):
    schema = SCHEMAS[index]
    prompts = [tokenizer.encode(p) for p in ("def f(x):", "import os", "{", "class A:")]
    params = SamplingParams(n=3, temperature=1.0, max_tokens=300, seed=index, constraint=Constraint.json_schema(schema))
    for request in llm.generate(prompts, params):
        for out in request.outputs:
            assert out.finish_reason == "stop", out.text
            jsonschema.validate(json.loads(out.text), schema)


def test_regex_choice_and_grammar(llm, tokenizer):
    prompts = [tokenizer.encode(p) for p in ("hello", "x = 1", "for i in")]
    cases = [
        (Constraint("regex", r"[a-z]{3}-[0-9]{2,4}"), lambda t: re.fullmatch(r"[a-z]{3}-[0-9]{2,4}", t)),
        (Constraint.choice(["alpha", "beta gamma", 'say "hi"']), lambda t: t in ("alpha", "beta gamma", 'say "hi"')),
        (Constraint("grammar", 'root ::= "x" [0-9] [0-9]? "y"'), lambda t: re.fullmatch(r"x[0-9]{1,2}y", t)),
        (Constraint("grammar", 'start: pair ("," pair)?\npair: /[a-c]/ "=" /[0-9]/'),
         lambda t: re.fullmatch(r"[a-c]=[0-9](,[a-c]=[0-9])?", t)),
    ]
    for constraint, check in cases:
        for seed in range(3):
            for request in llm.generate(prompts, SamplingParams(temperature=1.0, max_tokens=100, seed=seed,
                                                                constraint=constraint)):
                out = request.outputs[0]
                assert out.finish_reason == "stop" and check(out.text), (constraint, out.text)


def test_free_requests_in_a_constrained_batch_are_unchanged(llm, tokenizer):
    rng = random.Random(0)
    free = [[rng.randrange(3, 300) for _ in range(rng.randint(2, 12))] for _ in range(4)]
    alone = [r.outputs[0].token_ids for r in llm.generate(free, SamplingParams(temperature=0, max_tokens=10))]
    engine = llm.engine
    for i, prompt in enumerate(free):
        engine.add_request(f"free-{i}", prompt, SamplingParams(temperature=0, max_tokens=10))
        engine.add_request(f"json-{i}", prompt, SamplingParams(temperature=0, max_tokens=200,
                                                              constraint=Constraint.json_schema(SCHEMAS[0])))
    tokens: dict[str, list[int]] = {}
    while engine.has_unfinished():
        for delta in engine.step():
            tokens.setdefault(delta.request_id, []).extend(delta.token_ids)
    assert [tokens[f"free-{i}"] for i in range(4)] == alone
    for i in range(4):
        jsonschema.validate(json.loads(tokenizer.decode(tokens[f"json-{i}"])), SCHEMAS[0])


def test_greedy_constrained_output_is_the_masked_argmax(model, llm, tokenizer, grammars):
    """The obviously correct loop: recompute the sequence, take the argmax among the allowed tokens."""
    constraint = Constraint.json_schema(SCHEMAS[2])
    prompt = tokenizer.encode("value =")
    out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=50, constraint=constraint))[0].outputs[0]
    matcher, tokens = grammars.matcher(constraint), list(prompt)
    with torch.no_grad():
        while not matcher.is_stopped():
            logits = model(torch.tensor([tokens]))[0, -1].double()
            allowed = sorted(allowed_tokens_reference(matcher, len(logits)))
            token = allowed[int(logits[allowed].argmax())]
            if token == tokenizer.eos_id:
                break
            tokens.append(token)
            matcher.consume_token(token)
    assert out.token_ids[: len(tokens) - len(prompt)] == tokens[len(prompt):]


def test_bad_constraints_are_refused_with_the_reason(llm, tokenizer):
    prompt = [tokenizer.encode("x")]
    for constraint, words in [
        (Constraint.json_schema({"type": "object", "properties": {"a": {"type": "strng"}}}), "strng"),
        (Constraint("regex", "(unclosed"), "unclosed"),
        (Constraint("grammar", "start: missing_rule"), "missing_rule"),
    ]:
        with pytest.raises(GenerationError, match=words):
            llm.generate(prompt, SamplingParams(max_tokens=5, constraint=constraint))
    for bad in ('{"type": "object"', "[1, 2]"):
        with pytest.raises(GenerationError, match="JSON schema"):
            Constraint.json_schema(bad)
    with pytest.raises(GenerationError, match="non-empty strings"):
        Constraint.choice([])
    with pytest.raises(GenerationError, match="unknown constraint kind"):
        Constraint("xml", "<a/>")


def test_a_constraint_is_compiled_once(tokenizer):
    cache = GrammarCache(tokenizer, tokenizer.vocab_size, capacity=2)
    a, b, c = (Constraint("regex", r) for r in ("a+", "b+", "c+"))
    assert cache.compile(a) is cache.compile(a)
    assert cache.matcher(a) is not cache.compile(a)
    cache.compile(b), cache.compile(c)
    assert cache.compile(c) is cache.compile(c) and len(cache._compiled) == 2 and a not in cache._compiled
