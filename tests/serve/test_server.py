"""The OpenAI-compatible server, driven by the `openai` package as a real client, on a tiny model."""

import asyncio
import json
import re
import time

import httpx
import jsonschema
import openai
import pytest
import torch
from helpers import ServerThread, tiny_model

from lmforge.serve.engine import EngineConfig, LLMEngine
from lmforge.serve.server import OpenAIServer

KEY = "test-key"


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_model(tokenizer.vocab_size, max_seq_len=128)


@pytest.fixture(scope="module")
def live(model, tokenizer):
    engine = LLMEngine(model, tokenizer, EngineConfig(max_num_seqs=8, dtype=torch.float32, block_size=4))
    with ServerThread(OpenAIServer(engine, "tiny", KEY)) as server:
        yield server


@pytest.fixture(scope="module")
def client(live):
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key=KEY, max_retries=0)


def test_models_and_tokenizer_endpoints(client, live, tokenizer):
    assert [m.id for m in client.models.list()] == ["tiny"]
    headers = {"Authorization": f"Bearer {KEY}"}
    tokens = httpx.post(f"{live.url}/tokenize", json={"prompt": "def f(x):", "add_special_tokens": False}, headers=headers).json()
    assert tokens["tokens"] == tokenizer.encode("def f(x):")
    text = httpx.post(f"{live.url}/detokenize", json={"tokens": tokens["tokens"]}, headers=headers).json()["prompt"]
    assert text == "def f(x):"
    info = httpx.get(f"{live.url}/tokenizer_info", headers=headers).json()
    assert info["eos_token"] == tokenizer.hf.id_to_token(tokenizer.eos_id)
    assert httpx.get(f"{live.url}/health").status_code == 200
    assert "lmforge_kv_blocks_total" in httpx.get(f"{live.url}/metrics").text


def test_echo_logprobs_are_the_models_prompt_log_probabilities(client, model, tokenizer):
    prompt = tokenizer.encode("import os\nimport sys\n")
    r = client.completions.create(model="tiny", prompt=prompt, max_tokens=1, temperature=0, logprobs=1, echo=True)
    lp = r.choices[0].logprobs
    assert len(lp.token_logprobs) == len(prompt) + 1 and lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    with torch.no_grad():
        logp = model(torch.tensor([prompt]))[0].log_softmax(-1)
    expected = [float(logp[t - 1, prompt[t]]) for t in range(1, len(prompt))]
    assert lp.token_logprobs[1: len(prompt)] == pytest.approx(expected, abs=1e-4)
    greedy = int(logp[-1].argmax())
    assert lp.token_logprobs[-1] == pytest.approx(float(logp[-1, greedy]), abs=1e-4)
    assert lp.top_logprobs[-1] == {tokenizer.decode_bytes([greedy]).decode("utf-8", "replace"): pytest.approx(lp.token_logprobs[-1])}
    assert r.choices[0].text.startswith("import os\nimport sys\n")
    assert r.usage.prompt_tokens == len(prompt) and r.usage.completion_tokens == 1


def test_completions_batch_of_prompts_and_seeds(client):
    r = client.completions.create(model="tiny", prompt=["def", "class"], max_tokens=6, n=2, seed=5, temperature=1.0)
    assert sorted(c.index for c in r.choices) == [0, 1, 2, 3]
    again = client.completions.create(model="tiny", prompt=["def", "class"], max_tokens=6, n=2, seed=5, temperature=1.0)
    assert [c.text for c in r.choices] == [c.text for c in again.choices]
    assert 0 < r.usage.completion_tokens <= 4 * 6


def test_chat_and_streaming_with_usage(client):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
    full = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0, logprobs=True,
                                          top_logprobs=2)
    choice = full.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    assert len(choice.logprobs.content) == full.usage.completion_tokens
    assert all(len(t.top_logprobs) == 2 for t in choice.logprobs.content)
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens and chunks[-1].choices == []
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = client.completions.create(model="tiny", prompt="x = ", max_tokens=5, temperature=0, stream=True)
    whole = client.completions.create(model="tiny", prompt="x = ", max_tokens=5, temperature=0)
    assert "".join(c.choices[0].text for c in streamed) == whole.choices[0].text


def test_reasoning_effort_extensions(client, live):
    messages = [{"role": "user", "content": "hello"}]
    r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, n=2, seed=1, temperature=1.0,
                                       extra_body={"return_dtr": True})
    for choice in r.choices:
        extra = choice.model_extra
        assert 0 <= extra["dtr"] <= 1 and extra["reasoning_signals"]["dtr"] == extra["dtr"]
        assert set(extra["reasoning_signals"]) == {"dtr", "logprob", "certainty"}
    assert "think" not in r.model_extra
    plain = client.completions.create(model="tiny", prompt="def", max_tokens=4)
    assert "dtr" not in plain.choices[0].model_extra
    body = {"think": "dtr", "think_prefix": 3, "think_keep": 0.5, "ignore_eos": True, "return_dtr": True}
    r = client.completions.create(model="tiny", prompt=["def", "class"], max_tokens=8, n=4, seed=2, temperature=1.0,
                                  extra_body=body)
    assert r.model_extra["think"]["rule"] == "dtr" and len(r.model_extra["think"]["answers"]) == 2
    for prompt in range(2):
        choices = [c for c in r.choices if c.index // 4 == prompt]
        kept = [c for c in choices if c.model_extra["think"]["kept"]]
        assert len(kept) == 2 and all(c.finish_reason == "length" for c in kept)
        assert all(c.finish_reason == "abort" for c in choices if c not in kept)
    assert r.usage.completion_tokens == 2 * (2 * 8 + 2 * 3)  # rejected choices cost their prefix only
    chunks = list(client.completions.create(model="tiny", prompt="def", max_tokens=8, n=4, seed=2, temperature=1.0,
                                            stream=True, extra_body=body))
    verdicts = [c.choices[0].model_extra.get("think") for c in chunks if c.choices and c.choices[0].finish_reason]
    assert sorted(v["kept"] for v in verdicts) == [False, False, True, True]
    assert live.server.engine.blocks.num_free_blocks == live.server.engine.plan.num_blocks
    with pytest.raises(openai.BadRequestError, match="unknown think rule"):
        client.completions.create(model="tiny", prompt="x", n=2, extra_body={"think": "vibes"})
    with pytest.raises(openai.BadRequestError, match="n of at least 2"):
        client.completions.create(model="tiny", prompt="x", extra_body={"think": "dtr"})


PLACE = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 6},
                                         "n": {"type": "integer", "minimum": 0, "maximum": 99}},
         "required": ["city", "n"], "additionalProperties": False}


def test_structured_outputs_parse_and_validate(client, tokenizer):
    messages = [{"role": "user", "content": "Where?"}]
    fmt = {"type": "json_schema", "json_schema": {"name": "place", "schema": PLACE, "strict": True}}
    r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=60, n=3, seed=3, temperature=1.0,
                                       response_format=fmt)
    for choice in r.choices:
        assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(choice.message.content), PLACE)
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=60, seed=3,
                                                 temperature=1.0, response_format=fmt, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == r.choices[0].message.content
    legacy = client.completions.create(model="tiny", prompt="x", max_tokens=60, seed=3, temperature=1.0,
                                       extra_body={"guided_json": PLACE})
    jsonschema.validate(json.loads(legacy.choices[0].text), PLACE)
    close = tokenizer.encode("}")[0]  # favoured from the first token: the grammar still opens the object first
    obj = client.completions.create(model="tiny", prompt="x", max_tokens=20, temperature=0, logit_bias={str(close): 50},
                                    extra_body={"response_format": {"type": "json_object"}})
    assert obj.choices[0].finish_reason == "stop" and json.loads(obj.choices[0].text) == {}
    for body, check in [({"structured_outputs": {"choice": ["yes", "no"]}}, lambda t: t in ("yes", "no")),
                        ({"structured_outputs": {"regex": "[0-9]{3}"}}, lambda t: re.fullmatch("[0-9]{3}", t)),
                        ({"guided_grammar": 'root ::= "a" "b"?'}, lambda t: t in ("a", "ab"))]:
        r = client.completions.create(model="tiny", prompt="answer:", max_tokens=20, n=2, seed=1, temperature=1.0,
                                      extra_body=body)
        assert all(check(c.text) for c in r.choices), (body, [c.text for c in r.choices])


@pytest.mark.parametrize("body, message", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "nmber"}}}}, "nmber"),
    ({"structured_outputs": {"regex": "(x"}}, "regex constraint"),
    ({"response_format": {"type": "json_object"}, "guided_regex": "a"}, "in 2 ways"),
    ({"structured_outputs": {"xml": "<a/>"}}, "xml"),
    ({"response_format": {"type": "yaml"}}, "response_format"),
])
def test_bad_constraints_are_400(client, body, message):
    with pytest.raises(openai.BadRequestError, match=message):
        client.completions.create(model="tiny", prompt="x", max_tokens=4, extra_body=body)


@pytest.mark.parametrize("kwargs, message", [
    ({"max_tokens": -1}, "max_tokens"), ({"n": 0}, "n must be"), ({"logprobs": 50}, "logprobs"),
    ({"temperature": "hot"}, "temperature"), ({"prompt": "word " * 200}, "context is 128"), ({"top_p": 0}, "top_p"),
    ({"logit_bias": {"999999": 5}}, "logit_bias"), ({"prompt": [10**7]}, "outside the vocabulary"),
])
def test_bad_requests_are_400(client, kwargs, message):
    with pytest.raises(openai.BadRequestError, match=message):
        client.completions.create(**{"model": "tiny", "prompt": "x", **kwargs})


def test_unknown_model_key_and_route(client, live):
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="other", prompt="x", max_tokens=1)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{live.url}/v1", api_key="wrong", max_retries=0).models.list()
    assert httpx.get(f"{live.url}/v1/models").status_code == 401
    response = httpx.get(f"{live.url}/v1/nothing", headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found_error"


def test_chat_without_template_is_400(model, tokenizer):
    from lmforge.tokenizer import Tokenizer

    plain = Tokenizer(tokenizer.hf, add_bos=False, chat_template=None)
    engine = LLMEngine(model, plain, EngineConfig(max_num_seqs=2, dtype=torch.float32))
    with ServerThread(OpenAIServer(engine, "plain")) as server:
        c = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="no chat template"):
            c.chat.completions.create(model="plain", messages=[{"role": "user", "content": "hi"}])


def test_disconnect_mid_stream_frees_the_memory(live):
    engine = live.server.engine
    start = engine.blocks.num_free_blocks
    body = {"model": "tiny", "prompt": "def f(x):", "max_tokens": 100, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", f"{live.url}/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}) as r:
        lines = r.iter_lines()
        assert json.loads(next(line for line in lines if line.startswith("data: "))[6:])["choices"]
    deadline = time.monotonic() + 10
    while engine.requests or engine.blocks.num_free_blocks != start:
        assert time.monotonic() < deadline, "the aborted request kept its blocks"
        time.sleep(0.05)


def test_concurrent_clients_all_answered(live):
    async def main():
        client = openai.AsyncOpenAI(base_url=f"{live.url}/v1", api_key=KEY, max_retries=0)
        jobs = [client.completions.create(model="tiny", prompt=f"item {i}", max_tokens=4 + i % 5, seed=i, temperature=0.5)
                for i in range(20)]
        return await asyncio.gather(*jobs)

    results = asyncio.run(main())
    assert all(r.choices[0].finish_reason in ("stop", "length") for r in results)


@pytest.mark.parametrize("mixers", [["2mamba", "softmax"], ["mamba2s"], ["sparse", "softmax"]], ids="+".join)
def test_linear_hybrid_and_sparse_models_serve_the_same_api(tokenizer, mixers):
    model = tiny_model(tokenizer.vocab_size, max_seq_len=128, mixers=mixers, sparse_block_q=8, sparse_block_k=8)
    engine = LLMEngine(model, tokenizer, EngineConfig(max_num_seqs=4, dtype=torch.float32, block_size=4))
    with ServerThread(OpenAIServer(engine, "mixed")) as server:
        c = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
        whole = c.completions.create(model="mixed", prompt="def f(x):", max_tokens=6, temperature=0)
        streamed = c.completions.create(model="mixed", prompt="def f(x):", max_tokens=6, temperature=0, stream=True)
        assert "".join(ch.choices[0].text for ch in streamed) == whole.choices[0].text
        chat = c.chat.completions.create(model="mixed", messages=[{"role": "user", "content": "hi"}], max_tokens=4, n=2)
        assert len(chat.choices) == 2 and chat.usage.completion_tokens > 0
