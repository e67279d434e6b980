"""The one model: a Llama-family decoder whose token mixer is chosen per layer."""

from lmforge.model.transformer import Transformer

__all__ = ["Transformer"]
