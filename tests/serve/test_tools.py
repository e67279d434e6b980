"""Tool calls: the Hermes-format parser (whole and streamed), the prompt the tools go into, and forced calls
whose arguments always validate, through the engine and through the server with the `openai` client."""

import json

import jsonschema
import openai
import pytest
import torch
from helpers import ServerThread, tiny_model

from lmforge.errors import GenerationError
from lmforge.interop.chat import render_chat
from lmforge.serve.engine import EngineConfig, LLMEngine
from lmforge.serve.llm import LLM
from lmforge.serve.params import SamplingParams
from lmforge.serve.server import OpenAIServer
from lmforge.serve.tools import ToolCallParser, check_tools, hermes_messages, split_reply, template_reads_tools, tool_constraint
from lmforge.tokenizer import Tokenizer

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
ADD = {"type": "function", "function": {
    "name": "add", "parameters": {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99},
                                                                   "b": {"type": "integer", "minimum": 0, "maximum": 99}},
                                  "required": ["a", "b"], "additionalProperties": False}}}
TOOLS = [WEATHER, ADD]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def check_calls(calls, names=tuple(SCHEMAS)):
    assert calls
    for call in calls:
        assert call["function"]["name"] in names and call["id"].startswith("call_")
        jsonschema.validate(json.loads(call["function"]["arguments"]), SCHEMAS[call["function"]["name"]])


REPLY = ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}\n'
         '</tool_call>\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>')


def test_split_reply_finds_calls_and_content():
    content, calls = split_reply(REPLY)
    assert content == "Let me check."
    assert [c["function"]["name"] for c in calls] == ["get_weather", "add"]
    assert json.loads(calls[1]["function"]["arguments"]) == {"a": 1, "b": 2}
    assert split_reply("no calls < here <tool") == ("no calls < here <tool", [])
    content, calls = split_reply("<tool_call>\nnot json\n</tool_call>")  # not a call: kept as content
    assert calls == [] and content == "<tool_call>\nnot json\n</tool_call>"
    content, calls = split_reply('<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}')  # never closed
    assert content is None and calls[0]["function"]["name"] == "add"
    content, calls = split_reply('<tool_call>{"name": "add", "arguments": "{\\"a\\": 5}"}</tool_call>')  # text args
    assert json.loads(calls[0]["function"]["arguments"]) == {"a": 5}


@pytest.mark.parametrize("step", [1, 2, 3, 7, 50])
def test_streamed_parse_equals_the_whole(step):
    parser, content, calls = ToolCallParser(), "", []
    for i in range(0, len(REPLY), step):
        text, new = parser.push(REPLY[i: i + step])
        assert "<tool" not in text
        content, calls = content + text, calls + new
    rest, more = parser.finish()
    whole_content, whole_calls = split_reply(REPLY)
    assert (content + rest).strip() == whole_content
    assert [c["function"] for c in calls + more] == [c["function"] for c in whole_calls]


def test_hermes_prompt_for_a_template_without_tools(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                                      "arguments": '{"city": "Oslo", "unit": "celsius"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "4 degrees"}]
    assert not template_reads_tools(tokenizer.chat_template)
    out = hermes_messages(messages, TOOLS)
    assert out[0]["role"] == "system" and out[0]["content"].startswith("Be brief.")
    assert json.dumps(WEATHER) in out[0]["content"] and "<tool_call>" in out[0]["content"]
    assert split_reply(out[2]["content"])[1][0]["function"]["name"] == "get_weather"
    assert out[3] == {"role": "tool", "content": "<tool_response>\n4 degrees\n</tool_response>"}
    assert "<tool_response>" in render_chat(tokenizer, out)


def test_a_template_that_reads_tools_gets_them(tokenizer):
    template = ("{% if tools %}TOOLS {{ tools | map(attribute='function.name') | join(',') }}\n{% endif %}"
                "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")
    tok = Tokenizer(tokenizer.hf, add_bos=False, chat_template=template)
    assert template_reads_tools(template)
    assert render_chat(tok, [{"role": "user", "content": "hi"}], tools=TOOLS).startswith("TOOLS get_weather,add\n")


def test_checks_refuse_bad_tools():
    with pytest.raises(GenerationError, match="not among the tools"):
        check_tools(TOOLS, {"type": "function", "function": {"name": "nope"}})
    with pytest.raises(GenerationError, match="no tools were given"):
        check_tools([], "required")
    with pytest.raises(GenerationError, match="unique"):
        check_tools([ADD, ADD], "auto")
    with pytest.raises(GenerationError, match="letters, digits"):
        check_tools([{"type": "function", "function": {"name": "bad name"}}], "auto")
    assert tool_constraint(TOOLS, "auto") is None and tool_constraint(TOOLS, "none") is None


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_model(tokenizer.vocab_size, max_seq_len=1024)


@pytest.mark.parametrize("choice, parallel", [("required", True), ("required", False),
                                              ({"type": "function", "function": {"name": "add"}}, True)])
def test_forced_calls_always_parse_and_validate(model, tokenizer, choice, parallel):
    llm = LLM(model, tokenizer, EngineConfig(dtype=torch.float32, block_size=4, max_num_seqs=8))
    names = ("add",) if isinstance(choice, dict) else tuple(SCHEMAS)
    end = {tokenizer.eos_id: 8.0}  # a random model would chain calls until max_tokens: let it end when it may
    params = SamplingParams(n=4, temperature=1.0, max_tokens=300, seed=7, logit_bias=end,
                            constraint=tool_constraint(TOOLS, choice, parallel))
    for request in llm.generate([tokenizer.encode(p) for p in ("call a tool", "x")], params):
        for out in request.outputs:
            assert out.finish_reason == "stop", out.text
            content, calls = split_reply(out.text)
            assert content is None
            check_calls(calls, names)
            assert parallel or len(calls) == 1


@pytest.fixture(scope="module")
def client(model, tokenizer):
    engine = LLMEngine(model, tokenizer, EngineConfig(max_num_seqs=8, dtype=torch.float32, block_size=4))
    with ServerThread(OpenAIServer(engine, "tiny")) as server:
        yield openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)


def test_openai_client_gets_tool_calls(client, tokenizer):
    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    r = client.chat.completions.create(model="tiny", messages=messages, tools=TOOLS, tool_choice="required",
                                       max_tokens=300, n=2, seed=1, temperature=1.0, logit_bias={tokenizer.eos_id: 8})
    for choice in r.choices:
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        check_calls([c.model_dump() for c in choice.message.tool_calls])
    named = {"type": "function", "function": {"name": "get_weather"}}
    r = client.chat.completions.create(model="tiny", messages=messages, tools=TOOLS, tool_choice=named,
                                       parallel_tool_calls=False, max_tokens=300, seed=2, temperature=1.0)
    calls = r.choices[0].message.tool_calls
    assert len(calls) == 1 and calls[0].function.name == "get_weather"
    follow_up = messages + [r.choices[0].message.model_dump(exclude_none=True),
                            {"role": "tool", "tool_call_id": calls[0].id, "content": "5"}]
    r = client.chat.completions.create(model="tiny", messages=follow_up, tools=TOOLS, max_tokens=5, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length")
    r = client.chat.completions.create(model="tiny", messages=messages, tools=TOOLS, tool_choice="none", max_tokens=5,
                                       temperature=0)
    assert r.choices[0].message.tool_calls is None and r.choices[0].message.content is not None


def test_tool_calls_stream_as_deltas(client, tokenizer):
    kwargs = dict(model="tiny", messages=[{"role": "user", "content": "add"}], tools=TOOLS, tool_choice="required",
                  max_tokens=300, seed=3, temperature=1.0, logit_bias={tokenizer.eos_id: 8})
    whole = client.chat.completions.create(**kwargs).choices[0].message.tool_calls
    calls: dict[int, dict] = {}
    finish = None
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for d in choice.delta.tool_calls or []:
                call = calls.setdefault(d.index, {"name": "", "arguments": ""})
                call["name"] += d.function.name or ""
                call["arguments"] += d.function.arguments or ""
    assert finish == "tool_calls"
    assert [(c["name"], json.loads(c["arguments"])) for _, c in sorted(calls.items())] == \
        [(c.function.name, json.loads(c.function.arguments)) for c in whole]


@pytest.mark.parametrize("kwargs, message", [
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "not among the tools"),
    ({"tools": None, "tool_choice": "required"}, "no tools were given"),
    ({"tool_choice": "required", "response_format": {"type": "json_object"}}, "forces a tool call"),
    ({"tool_choice": "sometimes"}, "tool_choice"),
])
def test_bad_tool_requests_are_400(client, kwargs, message):
    base = {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "tools": TOOLS, "max_tokens": 4}
    with pytest.raises(openai.BadRequestError, match=message):
        client.chat.completions.create(**{**base, **kwargs})
