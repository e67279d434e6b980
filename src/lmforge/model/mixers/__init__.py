"""Token mixers behind one contract, and the registry the transformer builds them from.

A mixer is an nn.Module built as factory(cfg, layer) with
    forward(x, positions, step: Step | None) -> same shape as x
    cache_spec(dtype, block_size) -> CacheSpec  (what it keeps per token and per sequence)
    mixing_flops_per_token(seq_len) -> float    (training FLOPs spent mixing positions)
With `step=None` it runs the training path over a dense batch x [B, T, D] at positions
[B, T] (causal, each row from position 0). With a `lmforge.model.step.Step` x is the
engine's flat tokens [1, N, D] of unrelated sequences at positions [1, N]; the mixer reads
and extends its memory, `step.memory.layers[layer]`, group by group, and a sequence's
result never depends on the other sequences of the step. A mixer may define
`reset_mixer_parameters()`, called after the model's generic init, for parameters that
need a specific start (decay rates, convolution taps).
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from lmforge.config import ModelConfig
from lmforge.errors import ConfigError


MixerFactory = Callable[[ModelConfig, int], nn.Module]
_REGISTRY: dict[str, MixerFactory] = {}


def register_mixer(name: str) -> Callable[[MixerFactory], MixerFactory]:
    """Class decorator: make a mixer buildable by `name` from `model.mixers`."""

    def add(factory: MixerFactory) -> MixerFactory:
        _REGISTRY[name] = factory
        return factory

    return add


def mixer_names() -> list[str]:
    """Names accepted in `model.mixers`."""
    return sorted(_REGISTRY)


def build_mixer(name: str, cfg: ModelConfig, layer: int) -> nn.Module:
    """Instantiate the mixer called `name` for layer `layer`."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown mixer {name!r} in model.mixers; known mixers: {', '.join(mixer_names())}")
    return _REGISTRY[name](cfg, layer)


from lmforge.model.mixers import linear, softmax, sparse  # noqa: E402,F401  (registers the built-in mixers)
