"""How one request samples and when it stops: the settings of OpenAI's and vLLM's APIs, checked in one place."""

from __future__ import annotations

from dataclasses import dataclass, field

from lmforge.config import MAX_SEED, bounded, check_ranges
from lmforge.errors import GenerationError
from lmforge.serve.structured import Constraint
from lmforge.serve.think import RULES, SCORED

MAX_LOGPROBS = 20  # OpenAI's limit on top_logprobs


@dataclass
class SamplingParams:
    """Sampling and stopping settings of one request; a value outside its range is a GenerationError."""

    n: int = bounded(1, 1, 128)  # independent samples of the same prompt (they share its cache blocks)
    max_tokens: int | None = bounded(16, 0)  # None: until the context is full
    temperature: float = bounded(1.0, 0)  # 0: greedy
    top_p: float = bounded(1.0, 0, 1, low_open=True)  # 1: no nucleus cut
    top_k: int = bounded(0, 0)  # 0: no limit
    min_p: float = bounded(0.0, 0, 1)  # drop tokens below min_p x the top token's probability
    repetition_penalty: float = bounded(1.0, 0, low_open=True)  # 1: off (CTRL's penalty on prompt and output tokens)
    presence_penalty: float = bounded(0.0, -2, 2)  # OpenAI's: per output token seen at least once
    frequency_penalty: float = bounded(0.0, -2, 2)  # OpenAI's: per occurrence in the output
    logit_bias: dict[int, float] = bounded(low=-100, high=100, default_factory=dict)
    seed: int | None = bounded(None, 0, MAX_SEED)  # None: a fresh random stream
    stop: list[str] = field(default_factory=list)  # stop strings (not included in the output)
    stop_token_ids: list[int] = field(default_factory=list)  # stop tokens besides the model's end token
    ignore_eos: bool = False
    logprobs: int | None = bounded(None, 0, MAX_LOGPROBS)  # log-probabilities of each sampled token and its top-k alternatives
    prompt_logprobs: int | None = bounded(None, 0, MAX_LOGPROBS)  # the same for the prompt tokens
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    return_dtr: bool = False  # each sample's Deep-Thinking Ratio on its last delta (lmforge.eval.dtr)
    think: str | None = None  # a Think@n rule over the n samples (lmforge.serve.think), None: off
    think_prefix: int = bounded(50, 1)  # generated tokens each sample is judged on
    think_keep: float = bounded(0.5, 0, 1, low_open=True)  # share of the n samples kept
    constraint: Constraint | None = None  # what the output must match (lmforge.serve.structured), None: free

    def __post_init__(self) -> None:
        check_ranges(self, error=GenerationError)
        if self.think is not None and self.think not in RULES:
            raise GenerationError(f"unknown think rule {self.think!r}; choose one of {', '.join(RULES)}")
        if self.think is not None and self.n < 2:
            raise GenerationError("think needs n of at least 2 samples to choose among")
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if any(not s for s in self.stop):
            raise GenerationError("stop strings must not be empty")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def judged(self) -> bool:
        """Whether a Think@n rule will stop some samples (every rule but "all")."""
        return self.think not in (None, "all")

    @property
    def wants_signals(self) -> bool:
        """Whether the engine's meter must watch this request's tokens (its DTR, or a rule that reads them)."""
        return self.return_dtr or self.think in SCORED
