"""Request bodies of the OpenAI-compatible API (as vLLM serves it), validated by pydantic.

Unknown fields are ignored (clients send fields of newer API versions); a field of the
wrong type or out of range is a 400. Sampling fields map onto `SamplingParams`, whose own
range checks give the message.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lmforge.errors import GenerationError
from lmforge.serve.params import MAX_LOGPROBS, SamplingParams
from lmforge.serve.structured import Constraint
from lmforge.serve.tools import check_tools, tool_constraint


class StreamOptions(BaseModel):
    include_usage: bool = False


class JSONSchema(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str | None = None
    description: str | None = None
    json_schema: dict[str, Any] | bool = Field(default=True, alias="schema")  # OpenAI's `schema`; absent: any JSON
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """OpenAI's `response_format`: free text, any JSON object, or JSON matching a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchema | None = None


class StructuredOutputs(BaseModel):
    """vLLM's `structured_outputs` (one of json, json_object, regex, choice, grammar)."""

    model_config = ConfigDict(extra="forbid")

    json_schema: dict[str, Any] | str | bool | None = Field(default=None, alias="json")
    json_object: bool | None = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None


class SamplingFields(BaseModel):
    """Fields shared by completions and chat completions (OpenAI's, plus vLLM's extensions)."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    n: int = 1
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # vLLM: -1 or 0 is off
    min_p: float | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None  # accepted and ignored
    return_dtr: bool = False  # lmforge: each choice's Deep-Thinking Ratio (and mean log-probability, self-certainty)
    think: str | None = None  # lmforge: Think@n rule over the n choices (dtr, logprob, certainty, length, all)
    think_prefix: int | None = None  # lmforge: tokens each choice is judged on (default 50)
    think_keep: float | None = None  # lmforge: share of the n choices kept (default 0.5)
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputs | None = None  # vLLM's, and its earlier guided_* fields:
    guided_json: dict[str, Any] | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None

    def constraint(self) -> Constraint | None:
        """What the output must match, from whichever of the API's ways of saying it the request used (one at most)."""
        s = self.structured_outputs or StructuredOutputs()
        fmt = self.response_format
        given = {
            "json": s.json_schema if s.json_schema is not None else self.guided_json,
            "json_object": s.json_object or (fmt is not None and fmt.type == "json_object"),
            "regex": s.regex if s.regex is not None else self.guided_regex,
            "choice": s.choice if s.choice is not None else self.guided_choice,
            "grammar": s.grammar if s.grammar is not None else self.guided_grammar,
        }
        if fmt is not None and fmt.type == "json_schema":
            if fmt.json_schema is None:
                raise GenerationError("response_format of type json_schema needs a json_schema object")
            given["json"] = fmt.json_schema.json_schema if given["json"] is None else given["json"]
        named = [k for k, v in given.items() if v is not None and v is not False]
        if len(named) > 1:
            raise GenerationError(f"the request constrains its output in {len(named)} ways ({', '.join(named)}); give one")
        if not named:
            return None
        kind, value = named[0], given[named[0]]
        if kind == "json":
            return Constraint.json_schema(value)
        if kind == "json_object":
            return Constraint.json_schema({"type": "object"})
        if kind == "choice":
            return Constraint.choice(value)
        return Constraint(kind, value)

    def sampling_params(self, max_tokens: int | None, logprobs: int | None, prompt_logprobs: int | None) -> SamplingParams:
        """The engine's settings for this request (GenerationError on a bad value)."""
        try:
            bias = {int(k): v for k, v in (self.logit_bias or {}).items()}
        except ValueError:
            raise GenerationError("logit_bias keys must be token ids") from None
        given = {
            "temperature": self.temperature, "top_p": self.top_p, "min_p": self.min_p,
            "repetition_penalty": self.repetition_penalty, "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty, "seed": self.seed, "think_prefix": self.think_prefix,
            "think_keep": self.think_keep,
        }
        return SamplingParams(
            n=self.n, max_tokens=max_tokens, top_k=0 if self.top_k in (None, -1) else self.top_k, logit_bias=bias,
            stop=[self.stop] if isinstance(self.stop, str) else list(self.stop or []),
            stop_token_ids=list(self.stop_token_ids or []), ignore_eos=self.ignore_eos,
            logprobs=logprobs, prompt_logprobs=prompt_logprobs, skip_special_tokens=self.skip_special_tokens,
            include_stop_str_in_output=self.include_stop_str_in_output, return_dtr=self.return_dtr, think=self.think,
            constraint=self.constraint(), **{k: v for k, v in given.items() if v is not None},
        )


class CompletionRequest(SamplingFields):
    """POST /v1/completions."""

    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = 16
    logprobs: int | None = None
    echo: bool = False
    suffix: str | None = None

    def prompts(self) -> list[str | list[int]]:
        """The prompts as a list of texts or token-id lists."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if not p:
            raise GenerationError("prompt is empty")
        if isinstance(p[0], int):
            return [list(p)]
        return list(p)

    def params(self) -> SamplingParams:
        if self.suffix:
            raise GenerationError("suffix is not supported")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_LOGPROBS:
            raise GenerationError(f"logprobs must be in [0, {MAX_LOGPROBS}], got {self.logprobs}")
        prompt_logprobs = self.logprobs if self.echo and self.logprobs is not None else None
        return self.sampling_params(self.max_tokens, self.logprobs, prompt_logprobs)


class TextPart(BaseModel):
    type: Literal["text"] = "text"
    text: str


class FunctionCall(BaseModel):
    name: str
    arguments: str | dict[str, Any] = "{}"


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[TextPart] | None = None
    tool_calls: list[ToolCall] | None = None  # an assistant turn's calls
    tool_call_id: str | None = None  # a tool's result: the call it answers

    def as_dict(self) -> dict:
        content = self.content if isinstance(self.content, str) or self.content is None else "".join(p.text for p in self.content)
        message = {"role": self.role, "content": content or ""}
        if self.tool_calls:
            message["tool_calls"] = [c.model_dump(exclude_none=True) for c in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolSpec(BaseModel):
    type: Literal["function"]
    function: FunctionSpec


class FunctionName(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: FunctionName


class ChatCompletionRequest(SamplingFields):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    add_generation_prompt: bool = True
    tools: list[ToolSpec] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None  # default: auto with tools
    parallel_tool_calls: bool = True

    def tool_dicts(self) -> list[dict]:
        """The tools the model is offered (none under tool_choice "none"), as plain JSON."""
        if not self.tools or self.tool_choice == "none":
            return []
        return [t.model_dump(exclude_none=True) for t in self.tools]

    def tool_choice_value(self) -> str | dict | None:
        return self.tool_choice.model_dump() if isinstance(self.tool_choice, NamedToolChoice) else self.tool_choice

    def constraint(self) -> Constraint | None:
        """A forced tool call's grammar, or the response format's; not both."""
        tools, choice = self.tool_dicts(), self.tool_choice_value()
        check_tools([t.model_dump(exclude_none=True) for t in self.tools or []], choice)
        forced = tool_constraint(tools, choice, self.parallel_tool_calls)
        shaped = super().constraint()
        if forced is not None and shaped is not None:
            raise GenerationError(f"tool_choice {choice if isinstance(choice, str) else 'naming a function'} forces a "
                                  "tool call, which a response format or structured output cannot also shape")
        return forced or shaped

    def params(self) -> SamplingParams:
        if self.top_logprobs is not None and not self.logprobs:
            raise GenerationError("top_logprobs needs logprobs: true")
        top = (self.top_logprobs or 0) if self.logprobs else None
        if top is not None and not 0 <= top <= MAX_LOGPROBS:
            raise GenerationError(f"top_logprobs must be in [0, {MAX_LOGPROBS}], got {top}")
        limit = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        return self.sampling_params(limit, top, None)


class TokenizeRequest(BaseModel):
    """POST /tokenize: a text prompt or chat messages."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    tokens: list[int]
