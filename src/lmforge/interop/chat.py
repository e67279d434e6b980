"""Chat templates: the Jinja2 programs that turn messages into a model's prompt format."""

from __future__ import annotations

from functools import lru_cache

from lmforge.errors import GenerationError
from lmforge.tokenizer import Tokenizer


@lru_cache(maxsize=8)
def _compile(template: str):
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template)


def render_chat(tokenizer: Tokenizer, messages: list[dict], add_generation_prompt: bool = True,
                tools: list[dict] | None = None) -> str:
    """The prompt text for `messages` ([{"role": ..., "content": ...}]) in the tokenizer's chat format.

    Rendered like `transformers`' `apply_chat_template`: a sandboxed Jinja2 environment
    with `messages`, `tools`, `add_generation_prompt`, `bos_token` and `eos_token` defined.
    """
    if not tokenizer.chat_template:
        raise GenerationError("this model has no chat template; use --prompt with plain text instead of --chat")
    from jinja2 import TemplateError

    token = lambda i: "" if i is None else tokenizer.hf.id_to_token(i)  # noqa: E731
    try:
        return _compile(tokenizer.chat_template).render(
            messages=messages,
            tools=tools,
            add_generation_prompt=add_generation_prompt,
            bos_token=token(tokenizer.bos_id),
            eos_token=token(tokenizer.eos_id),
        )
    except TemplateError as e:
        raise GenerationError(f"the model's chat template failed: {e}") from None
