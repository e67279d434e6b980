"""Which modules of the one model are quantized, and how: recorded in config.json, re-applied on load.

A quantized model is the same `Transformer` with some `nn.Linear` modules replaced by
`QuantLinear`. The layout maps each replaced module's name to its grid. When the
embedding is tied to the output head and the head is quantized, the embedding is the
dequantized head (one set of weights, as before quantization) and is not stored.
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.model.transformer import Transformer
from lmforge.quant.grid import Grid, QuantizationError
from lmforge.quant.linear import QuantLinear


def quantized_modules(model: nn.Module) -> dict[str, QuantLinear]:
    """Every QuantLinear of the model by name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, QuantLinear)}


def is_quantized(model: nn.Module) -> bool:
    return bool(quantized_modules(model))


def layout_of(model: nn.Module) -> dict[str, dict]:
    """{module name: {"bits", "group_size", "symmetric"}} for every quantized module."""
    return {name: {"bits": m.grid.bits, "group_size": m.grid.group_size, "symmetric": m.grid.symmetric}
            for name, m in quantized_modules(model).items()}


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted path `name`."""
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def apply_layout(model: Transformer, layout: dict[str, dict]) -> None:
    """Put empty QuantLinear modules where `layout` says, ready to receive saved tensors."""
    for name, spec in layout.items():
        try:
            grid = Grid(int(spec["bits"]), spec["group_size"], bool(spec["symmetric"]))
        except (KeyError, TypeError, ValueError) as e:
            raise QuantizationError(f"quantization layout entry {name!r} is malformed ({e})") from None
        if name == "head":
            bias = False
            in_features, out_features = model.cfg.d_model, model.cfg.vocab_size
        else:
            try:
                linear = model.get_submodule(name)
            except AttributeError:
                raise QuantizationError(f"quantized module {name!r} does not exist in this model config") from None
            if not isinstance(linear, nn.Linear):
                raise QuantizationError(f"quantized module {name!r} is not a linear layer in this model config")
            bias, in_features, out_features = linear.bias is not None, linear.in_features, linear.out_features
        set_module(model, name, QuantLinear(in_features, out_features, grid, bias))


def derived_tensors(model: Transformer) -> set[str]:
    """Names of state tensors recomputed on load rather than stored (the tied embedding of a quantized head)."""
    return {"embed.weight"} if model.cfg.tie_embeddings and isinstance(model.head, QuantLinear) else set()


def tie_quantized_head(model: Transformer) -> None:
    """Make the embedding the dequantized head, as tying requires."""
    if derived_tensors(model):
        with torch.no_grad():
            model.embed.weight.copy_(model.head.dequantize())


def dequantize_model(model: Transformer) -> Transformer:
    """Replace every QuantLinear by an nn.Linear holding its dequantized weight (for float-only exporters)."""
    for name, m in quantized_modules(model).items():
        if name == "head" and model.cfg.tie_embeddings:
            model.head = None  # the embedding already holds the dequantized head
            continue
        linear = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
        with torch.no_grad():
            linear.weight.copy_(m.dequantize())
            if m.bias is not None:
                linear.bias.copy_(m.bias)
        set_module(model, name, linear)
    return model
