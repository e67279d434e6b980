"""Tool calls: OpenAI's `tools` into the prompt, the model's calls parsed out of its reply, and forced calls.

A chat template that reads `tools` gets them as transformers' `apply_chat_template` passes them. A
template that does not (SmolLM2's) gets them the way Hermes-format models read them (NousResearch's
Hermes 2 Pro, Qwen2.5): a system message listing each function's JSON signature inside
<tools></tools> and asking for <tool_call>{"name": ..., "arguments": {...}}</tool_call> blocks;
earlier calls and the tools' results are written back in that format. Replies are parsed in that
format in both cases (`ToolCallParser`, which also works on a stream), the parse vLLM's `hermes`
tool parser makes. `tool_choice` "required" or a named function becomes a grammar constraint
(lmforge.serve.structured): the reply is one or more such blocks whose JSON matches the function's
parameters, so the arguments always parse and validate.
"""

from __future__ import annotations

import json
import re
import uuid

from lmforge.errors import GenerationError
from lmforge.serve.structured import JSON_OPTIONS, Constraint

OPEN, CLOSE = "<tool_call>", "</tool_call>"
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names
NO_PARAMETERS = {"type": "object", "properties": {}}
HERMES_SYSTEM = (
    "You are a function calling AI model. You are provided with function signatures within <tools></tools> XML "
    "tags. You may call one or more functions to assist with the user query. Don't make assumptions about what "
    "values to plug into functions. Here are the available tools: <tools>\n{tools}\n</tools>\nFor each function "
    "call return a json object with function name and arguments within <tool_call></tool_call> XML tags as "
    "follows:\n<tool_call>\n{{\"name\": <function-name>, \"arguments\": <args-dict>}}\n</tool_call>"
)


def check_tools(tools: list[dict], choice) -> None:
    """Refuse tools without a proper name or parameters, duplicate names, and a tool_choice naming no tool."""
    if (choice == "required" or isinstance(choice, dict)) and not tools:
        raise GenerationError("tool_choice asks for a tool call but no tools were given")
    names = [t["function"]["name"] for t in tools]
    bad = next((n for n in names if not NAME.match(n)), None)
    if bad is not None:
        raise GenerationError(f"tool name {bad!r} must be 1-64 letters, digits, underscores or dashes")
    if len(set(names)) != len(names):
        raise GenerationError("tool names must be unique")
    for tool in tools:
        parameters = tool["function"].get("parameters")
        if parameters is not None and not (isinstance(parameters, dict) and parameters.get("type", "object") == "object"):
            raise GenerationError(f"the parameters of tool {tool['function']['name']!r} must be a JSON schema of an object")
    if isinstance(choice, dict) and choice["function"]["name"] not in names:
        raise GenerationError(f"tool_choice names {choice['function']['name']!r}, which is not among the tools")


def template_reads_tools(template: str) -> bool:
    """Whether a chat template renders a `tools` variable itself."""
    return re.search(r"\btools\b", template) is not None


def hermes_messages(messages: list[dict], tools: list[dict]) -> list[dict]:
    """Messages with the tools in the system message and earlier calls and results written as Hermes blocks,
    for a chat template that knows nothing of tools."""
    signatures = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    system = HERMES_SYSTEM.format(tools=signatures)
    out = []
    if messages and messages[0]["role"] == "system":
        system = messages[0]["content"] + "\n\n" + system
        messages = messages[1:]
    out.append({"role": "system", "content": system})
    for m in messages:
        if m["role"] == "assistant" and m.get("tool_calls"):
            blocks = [f"{OPEN}\n{json.dumps(call_body(c), ensure_ascii=False)}\n{CLOSE}" for c in m["tool_calls"]]
            out.append({"role": "assistant", "content": "\n".join(filter(None, [m.get("content") or "", *blocks]))})
        elif m["role"] == "tool":
            out.append({"role": "tool", "content": f"<tool_response>\n{m.get('content') or ''}\n</tool_response>"})
        else:
            out.append({"role": m["role"], "content": m.get("content") or ""})
    return out


def call_body(call: dict) -> dict:
    """{"name", "arguments"} of an OpenAI tool call (whose arguments are JSON text)."""
    arguments = call["function"].get("arguments") or "{}"
    try:
        arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
    except json.JSONDecodeError:
        raise GenerationError(f"the arguments of the earlier call to {call['function']['name']!r} are not JSON") from None
    return {"name": call["function"]["name"], "arguments": arguments}


def tool_constraint(tools: list[dict], choice, parallel: bool = True) -> Constraint | None:
    """The grammar that forces a call when tool_choice is "required" (any of the tools) or names a function; None
    for "auto" and "none". With `parallel`, one or more calls; otherwise exactly one."""
    if choice in (None, "auto", "none"):
        return None
    chosen = [t for t in tools if not isinstance(choice, dict) or t["function"]["name"] == choice["function"]["name"]]
    bodies = [{"type": "object", "additionalProperties": False, "required": ["name", "arguments"],
               "properties": {"name": {"const": t["function"]["name"]},
                              "arguments": t["function"].get("parameters") or NO_PARAMETERS}} for t in chosen]
    schema = {**(bodies[0] if len(bodies) == 1 else {"anyOf": bodies}), "x-guidance": JSON_OPTIONS}
    calls = 'call ("\\n" call)*' if parallel else "call"
    grammar = (f"start: {calls}\ncall: {json.dumps(OPEN + chr(10))} body {json.dumps(chr(10) + CLOSE)}\n"
               f"body: %json {json.dumps(schema)}")
    return Constraint("grammar", grammar)


def parse_call(text: str) -> dict | None:
    """An OpenAI tool call from the JSON inside one block, or None when it is not a call."""
    try:
        body = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        return None
    arguments = body.get("arguments", body.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": body["name"], "arguments": json.dumps(arguments, ensure_ascii=False)}}


def _partial_open(text: str) -> int:
    """Length of the longest end of `text` that could be the start of an opening tag."""
    for n in range(min(len(OPEN) - 1, len(text)), 0, -1):
        if OPEN.startswith(text[-n:]):
            return n
    return 0


class ToolCallParser:
    """Splits a reply, as it streams, into content text and tool calls.

    `push(text)` returns the content that can be shown now and the calls completed by it; text that may
    begin a block is held back until it is known. After the first block, whitespace between blocks is
    not content. `finish()` returns what is left: a block the model did not close is parsed as a call if
    its JSON is complete, otherwise it is content, as is any block whose JSON is not a call.
    """

    def __init__(self):
        self.buffer, self.inside, self.called = "", False, False

    def push(self, text: str) -> tuple[str, list[dict]]:
        self.buffer += text
        content, calls = [], []
        while True:
            if self.inside:
                end = self.buffer.find(CLOSE)
                if end < 0:
                    break
                block, self.buffer, self.inside = self.buffer[:end], self.buffer[end + len(CLOSE):], False
                call = parse_call(block)
                calls.extend([call] if call else [])
                content.extend([] if call else [OPEN + block + CLOSE])
                continue
            start = self.buffer.find(OPEN)
            if start < 0:
                keep = _partial_open(self.buffer)
                content.append(self.buffer[: len(self.buffer) - keep])
                self.buffer = self.buffer[len(self.buffer) - keep:]
                break
            content.append(self.buffer[:start])
            self.buffer, self.inside, self.called = self.buffer[start + len(OPEN):], True, True
        return self._shown("".join(content)), calls

    def finish(self) -> tuple[str, list[dict]]:
        rest, inside = self.buffer, self.inside
        self.buffer, self.inside = "", False
        if inside:
            call = parse_call(rest)
            return ("", [call]) if call else (self._shown(OPEN + rest), [])
        return self._shown(rest), []

    def _shown(self, content: str) -> str:
        return "" if self.called and not content.strip() else content


def split_reply(text: str) -> tuple[str | None, list[dict]]:
    """A whole reply's content (None when it is only calls) and its tool calls."""
    parser = ToolCallParser()
    content, calls = parser.push(text)
    rest, more = parser.finish()
    content, calls = content + rest, calls + more
    return (content.strip() or None, calls) if calls else (content, [])
