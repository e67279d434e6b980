"""Request bodies of the OpenAI-compatible API (as vLLM serves it), validated by pydantic.

Unknown fields are ignored (clients send fields of newer API versions); a field of the
wrong type or out of range is a 400. Sampling fields map onto `SamplingParams`, whose own
range checks give the message.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from lmforge.errors import GenerationError
from lmforge.serve.params import MAX_LOGPROBS, SamplingParams


class StreamOptions(BaseModel):
    include_usage: bool = False


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
            **{k: v for k, v in given.items() if v is not None},
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


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[TextPart] | None = None

    def as_dict(self) -> dict:
        content = self.content if isinstance(self.content, str) or self.content is None else "".join(p.text for p in self.content)
        return {"role": self.role, "content": content or ""}


class ChatCompletionRequest(SamplingFields):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    add_generation_prompt: bool = True

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
