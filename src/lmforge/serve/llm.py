"""`LLM`: offline batch generation through the engine, in the shape vLLM users know.

    from lmforge import LLM, SamplingParams
    llm = LLM("smollm2-135m")
    for out in llm.generate(["The capital of France is"], SamplingParams(max_tokens=32)):
        print(out.outputs[0].text)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence as Seq

from tqdm import tqdm

from lmforge.errors import GenerationError
from lmforge.interop.chat import render_chat
from lmforge.model.transformer import Transformer
from lmforge.serve.engine import Delta, EngineConfig, LLMEngine, TokenLogprob
from lmforge.serve.params import SamplingParams
from lmforge.tokenizer import Tokenizer


@dataclass
class CompletionOutput:
    """One sample of a request."""

    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    signals: dict[str, float] | None = None  # DTR, mean log-probability and self-certainty, when asked for
    kept: bool | None = None  # under a Think@n rule: whether the sample goes to the vote
    score: float | None = None  # ... and its prefix score


@dataclass
class RequestOutput:
    """A finished request: its prompt and its n samples."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: list[TokenLogprob] | None
    outputs: list[CompletionOutput]
    num_cached_tokens: int = 0


def collect(delta: Delta, output: CompletionOutput) -> None:
    """Add one step's progress of a sample to its output."""
    output.text += delta.text
    output.token_ids += delta.token_ids
    if delta.logprobs is not None:
        output.logprobs = (output.logprobs or []) + delta.logprobs
    output.finish_reason = delta.finish_reason or output.finish_reason
    if delta.finish_reason is not None:
        output.signals, output.kept, output.score = delta.signals, delta.kept, delta.score


def encode_prompt(tokenizer: Tokenizer, text: str) -> list[int]:
    """Token ids of a text prompt, with the beginning-of-sequence token when the model expects one."""
    ids = tokenizer.encode(text)
    return [tokenizer.bos_id, *ids] if tokenizer.add_bos and ids[:1] != [tokenizer.bos_id] else ids


def build_prompt(tokenizer: Tokenizer, text: str | None = None, chat: str | None = None, ids: str | None = None) -> list[int]:
    """The prompt of `lmforge generate`: text to continue, a user message in the chat template, token ids
    ("12,7,99", taken as they are), or, with none, the end-of-text token (start a new document)."""
    if ids is not None:
        return parse_token_ids(ids)
    if chat is not None:
        return encode_prompt(tokenizer, render_chat(tokenizer, [{"role": "user", "content": chat}]))
    if text:
        return encode_prompt(tokenizer, text)
    return ([tokenizer.bos_id] if tokenizer.add_bos else []) + [tokenizer.eos_id]


def parse_token_ids(text: str) -> list[int]:
    """Parse "1, 2, 3" or "1 2 3" into token ids."""
    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise GenerationError(f"--prompt-ids must be integers separated by commas or spaces, got {text!r}") from None


class LLM:
    """A model loaded for generation: any name `lmforge.interop.load.load_model` takes, or a model and tokenizer."""

    def __init__(self, model: str | Path | Transformer, tokenizer: Tokenizer | None = None,
                 config: EngineConfig | None = None, device: str = "auto", draft_model: Transformer | None = None):
        if not isinstance(model, Transformer):
            from lmforge.device import resolve_device
            from lmforge.interop.load import load_model

            loaded = load_model(model, resolve_device(device))
            model, tokenizer = loaded.model, loaded.tokenizer
        if tokenizer is None:
            raise ValueError("give the tokenizer with a model object")
        self.tokenizer = tokenizer
        self.engine = LLMEngine(model, tokenizer, config, draft_model)
        self._ids = itertools.count()

    def generate(self, prompts: str | Seq[str] | Seq[Seq[int]], params: SamplingParams | Seq[SamplingParams] | None = None,
                 use_tqdm: bool = False) -> list[RequestOutput]:
        """Generate for every prompt (text, or token ids) as one continuously batched workload; outputs in prompt order."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        params_list = list(params) if isinstance(params, (list, tuple)) else [params or SamplingParams()] * len(prompts)
        if len(params_list) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(params_list)} sampling settings")
        outputs: dict[str, RequestOutput] = {}
        for prompt, p in zip(prompts, params_list):
            text = prompt if isinstance(prompt, str) else None
            ids = encode_prompt(self.tokenizer, prompt) if isinstance(prompt, str) else list(prompt)
            request_id = str(next(self._ids))
            self.engine.add_request(request_id, ids, p)
            outputs[request_id] = RequestOutput(request_id, text, ids, None, [CompletionOutput(i) for i in range(p.n)])
        self.run(outputs, use_tqdm)
        return list(outputs.values())

    def chat(self, conversations: Seq[dict] | Seq[Seq[dict]], params: SamplingParams | None = None) -> list[RequestOutput]:
        """Generate replies to chat conversations (lists of {"role", "content"}) with the model's chat template."""
        if conversations and isinstance(conversations[0], dict):
            conversations = [conversations]
        prompts = [self.tokenizer.encode(render_chat(self.tokenizer, list(c))) for c in conversations]
        return self.generate(prompts, params)

    def run(self, outputs: dict[str, RequestOutput], use_tqdm: bool = False) -> None:
        """Step the engine until every request in `outputs` is finished, collecting their samples."""
        bar = tqdm(total=len(outputs), desc="generate", unit="req", disable=not use_tqdm)
        while self.engine.has_unfinished():
            for delta in self.engine.step():
                out = outputs.get(delta.request_id)
                if out is not None:
                    if delta.prompt_logprobs is not None:
                        out.prompt_logprobs = delta.prompt_logprobs
                    out.num_cached_tokens = max(out.num_cached_tokens, delta.num_cached_tokens)
                    collect(delta, out.outputs[delta.index])
                    if delta.finish_reason and all(o.finish_reason for o in out.outputs):
                        bar.update()
        bar.close()


def stream(engine: LLMEngine, request_id: str, prompt: list[int], params: SamplingParams) -> Iterable[Delta]:
    """Run one request alone through `engine`, yielding its deltas as they come (for `lmforge generate`)."""
    engine.add_request(request_id, prompt, params)
    while engine.has_unfinished():
        yield from (d for d in engine.step() if d.request_id == request_id)

