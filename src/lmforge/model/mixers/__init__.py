"""Token mixers behind one contract, and the registry the transformer builds them from.

A mixer is an nn.Module with
    forward(x [B, T, D], positions [B, T], state: MixerState | None) -> [B, T, D]
    new_state(batch, max_len, device, dtype) -> MixerState
    mixing_flops_per_token(seq_len) -> float   (training FLOPs spent mixing positions)
With `state=None` it runs the training path over the whole sequence (causal). With a
state it reads and extends that state, so decoding is the same call one token at a time.
A mixer may define `reset_mixer_parameters()`, called after the model's generic init, for
parameters that need a specific start (decay rates, convolution taps).
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from lmforge.config import ModelConfig
from lmforge.errors import ConfigError


class MixerState:
    """Decoding state owned by one mixer of one layer (a KV cache, a recurrent state)."""


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
