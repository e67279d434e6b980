"""Autoregressive generation with the one model: prefill once, then one cached step per token."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from lmforge.config import MAX_SEED, bounded, range_error
from lmforge.errors import GenerationError
from lmforge.model.step import Memory, build_step
from lmforge.model.transformer import Transformer
from lmforge.serve.sampling import sample


@dataclass
class SamplingParams:
    """How to pick each next token and when to stop; a value outside its range is a GenerationError."""

    max_new_tokens: int = bounded(128, 1)
    temperature: float = bounded(0.8, 0)  # 0: greedy
    top_k: int = bounded(0, 0)  # 0: no limit
    top_p: float = bounded(1.0, 0, 1, low_open=True)  # 1: no nucleus cut
    stop_ids: tuple[int, ...] = ()
    seed: int = bounded(0, 0, MAX_SEED)

    def __post_init__(self) -> None:
        problem = range_error(SamplingParams, vars(self))
        if problem:
            raise GenerationError(problem)


def check_prompt(prompt: list[int], vocab_size: int, max_len: int) -> None:
    """Reject empty prompts, out-of-vocabulary ids and prompts that leave no room to generate."""
    if not prompt:
        raise GenerationError("the prompt is empty; give at least one token")
    bad = [t for t in prompt if not 0 <= t < vocab_size]
    if bad:
        raise GenerationError(f"token id {bad[0]} is outside the vocabulary (0..{vocab_size - 1})")
    if len(prompt) >= max_len:
        raise GenerationError(
            f"the prompt has {len(prompt)} tokens but the model's context is {max_len}; shorten the prompt"
        )


@torch.no_grad()
def generate(
    model: Transformer,
    prompt: list[int],
    params: SamplingParams,
    on_token: Callable[[int], None] | None = None,
    use_cache: bool = True,
) -> list[int]:
    """Generate up to `params.max_new_tokens` tokens after `prompt`; returns the new ids.

    The stop token, if produced, is included. `on_token` is called with each id as soon as
    it exists (for streaming). With `use_cache=False` every step recomputes the whole
    prefix: the slow reference the cached path is tested against.
    """
    max_len = model.cfg.max_seq_len
    check_prompt(prompt, model.cfg.vocab_size, max_len)
    device = model.embed.weight.device
    generator = torch.Generator(device=device).manual_seed(params.seed)
    budget = min(params.max_new_tokens, max_len - len(prompt))
    tokens = torch.tensor([prompt], device=device)
    block_size = 16
    n_blocks = -(-(len(prompt) + budget) // block_size)
    memory = Memory(model.cache_specs(model.embed.weight.dtype, block_size), n_blocks, block_size, 1, device)
    table = [list(range(n_blocks))]
    was_training = model.training
    model.eval()
    out: list[int] = []
    step_input, past = tokens[0], 0
    for _ in range(budget):
        if use_cache:
            logits = model(step_input, step=build_step([len(step_input)], [past], table, [0], memory, device=device))
            past += len(step_input)
        else:
            logits = model(tokens)[:, -1]
        nxt = sample(logits, params.temperature, params.top_k, params.top_p, generator)
        token = int(nxt)
        out.append(token)
        if on_token:
            on_token(token)
        if token in params.stop_ids:
            break
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        step_input = nxt
    model.train(was_training)
    return out


def parse_token_ids(text: str) -> list[int]:
    """Parse "1, 2, 3" or "1 2 3" into token ids."""
    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise GenerationError(f"--prompt-ids must be integers separated by commas or spaces, got {text!r}") from None
