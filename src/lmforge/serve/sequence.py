"""One sequence the engine generates: its tokens, where its memory lives, and how far it has been computed."""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field

import torch

from lmforge.serve.params import SamplingParams

_ids = itertools.count()


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """A prompt and what has been generated after it.

    `num_computed` tokens have their cache entries (and state) in memory; the scheduler
    runs the rest. `block_table` lists the cache blocks holding its positions in order,
    `slot` the state slot of a model with per-sequence state. The sampler's random stream
    (`generator`) belongs to the sequence, so its samples do not depend on the batch.
    """

    token_ids: list[int]
    params: SamplingParams
    request_id: str = ""
    index: int = 0  # which of the request's n samples
    seq_id: int = field(default_factory=lambda: next(_ids))
    status: Status = Status.WAITING
    num_computed: int = 0
    num_cached: int = 0  # prompt tokens found in the prefix cache when it was last admitted
    block_table: list[int] = field(default_factory=list)
    num_hashed_blocks: int = 0  # leading full blocks registered in the prefix cache
    slot: int | None = None
    finish_reason: str | None = None  # "stop", "length" or "abort"
    generator: torch.Generator | None = None
    num_prompt_tokens: int = -1
    matcher: object | None = None  # a constrained request's grammar state (lmforge.serve.structured)
    num_draft: int = 0  # speculative tokens at the end of token_ids, not yet accepted (lmforge.serve.speculative)

    def __post_init__(self) -> None:
        if self.num_prompt_tokens < 0:
            self.num_prompt_tokens = len(self.token_ids)

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def prompt(self) -> list[int]:
        return self.token_ids[: self.num_prompt_tokens]

    @property
    def output(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def num_uncomputed(self) -> int:
        return len(self.token_ids) - self.num_computed

    @property
    def finished(self) -> bool:
        return self.status is Status.FINISHED

    def append(self, token: int) -> None:
        self.token_ids.append(token)
