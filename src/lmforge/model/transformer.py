"""THE model: token embedding -> pre-norm residual blocks -> final norm -> output head.

One implementation serves training, evaluation, quantization, serving and interop. The
token mixer of each block comes from the registry in `lmforge.model.mixers`, so hybrids
are a config line; the inference engine passes a `Step` (a ragged batch of sequences and
the paged memory they read and write) through the same forward call.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from lmforge.config import ModelConfig
from lmforge.model.layers import RMSNorm, SwiGLU
from lmforge.model.mixers import build_mixer
from lmforge.model.step import CacheSpec, Step
from lmforge.ops.cross_entropy import linear_cross_entropy
from lmforge.ops.sequence_parallel import SequenceShard, check_heads, check_stages


def recomputed(function, *inputs):
    """function(*inputs), whose activations are not kept for the backward but recomputed in it from the inputs
    (activation checkpointing: Chen et al., "Training Deep Nets with Sublinear Memory Cost", arXiv 1604.06174)."""
    return checkpoint(function, *inputs, use_reentrant=False)


def _called(function, *inputs):
    return function(*inputs)


class Block(nn.Module):
    """x + mixer(norm(x)), then x + mlp(norm(x)). In training, `recompute` ("mixers" or "blocks") keeps only
    the inputs of each mixer or of the whole block for the backward and recomputes the rest there."""

    recompute = "none"

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.mixer_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mixer = build_mixer(cfg.mixer_for(layer), cfg, layer)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = SwiGLU(cfg.d_model, cfg.d_ff)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, step: Step | None) -> torch.Tensor:
        recompute = self.recompute if step is None and torch.is_grad_enabled() else "none"
        if recompute == "blocks":
            return recomputed(self._layers, x, positions)
        return self._layers(x, positions, step, recomputed if recompute == "mixers" else _called)

    def _mix(self, x: torch.Tensor, positions: torch.Tensor, step: Step | None = None) -> torch.Tensor:
        return self.mixer(self.mixer_norm(x), positions, step)

    def _layers(self, x: torch.Tensor, positions: torch.Tensor, step: Step | None = None, mix=_called) -> torch.Tensor:
        x = x + mix(self._mix, x, positions, step)
        return x + self.mlp(self.mlp_norm(x))


def recompute_activations(model: nn.Module, what: str) -> None:
    """Have training recompute `what` ("none", "mixers" or "blocks") in the backward: less memory, one more forward of it."""
    for block in model.modules():
        if isinstance(block, Block):
            block.recompute = what


class Transformer(nn.Module):
    """Llama-family decoder (Touvron et al., arXiv 2302.13971) with per-layer token mixers.

    `initialise=False` skips lmforge's initialisation, for loaders that copy in every weight next."""

    sequence_shard: SequenceShard | None = None  # set by `sequence_sharded`

    def __init__(self, cfg: ModelConfig, initialise: bool = True):
        super().__init__()
        if cfg.vocab_size is None:
            raise ValueError("ModelConfig.vocab_size must be set before building the model")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if initialise:
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, init_std) weights, unit norm gains, zero biases; residual output projections
        scaled by 1/sqrt(2 n_layers) (GPT-2)."""
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if name.endswith(".bias"):
                nn.init.zeros_(p)
            elif p.dim() < 2:
                nn.init.ones_(p)
            elif name.endswith(("o_proj.weight", "down_proj.weight", "out_proj.weight")):
                nn.init.normal_(p, std=std / math.sqrt(2 * self.cfg.n_layers))
            else:
                nn.init.normal_(p, std=std)
        for layer in self.layers:  # mixers with parameters that need a specific start (decay rates, convolutions)
            if hasattr(layer.mixer, "reset_mixer_parameters"):
                layer.mixer.reset_mixer_parameters()

    @property
    def output_weight(self) -> torch.Tensor:
        """[vocab, d_model] matrix of the output head (the embedding when tied)."""
        return self.embed.weight if self.head is None else self.head.weight

    def fuse_projections(self) -> list[nn.Module]:
        """For inference: join the matrix products that read the same input (q, k, v; gate, up) so each
        decoded token runs fewer, larger products; returns the fused modules. Weights stay shared with
        the separate layers (checkpoints are unchanged) and code with gradients enabled never uses them."""
        fused = []
        for module in list(self.modules()):
            if module is not self and hasattr(module, "fuse_projections"):
                fused += module.fuse_projections()
        return fused

    def cache_specs(self, dtype: torch.dtype, block_size: int) -> list[CacheSpec]:
        """What every layer keeps per token and per sequence when the engine runs it in `dtype`."""
        return [layer.mixer.cache_spec(dtype, block_size) for layer in self.layers]

    def forward(
        self,
        tokens: torch.Tensor,
        targets: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        step: Step | None = None,
        return_hidden: bool = False,
    ):
        """Run the model on tokens [B, T], or on the engine's flat tokens [N] with a `step`.

        Dense: returns the mean next-token loss when `targets` [B, T] are given (chunked,
        never materialising all fp32 logits), else logits [B, T, V]; `positions` [B, T]
        default to 0..T-1. With `return_hidden` it returns (output, hiddens): the residual
        stream after the embedding and after every block, n_layers + 1 tensors [B, T, D].
        Engine: returns logits [M, V] of the rows `step.logits_indices` only, and hands each
        layer's hidden state at those rows to `step.observer` when one is set.
        """
        if step is not None:
            return self.step_logits(tokens, step)
        b, t = tokens.shape
        hiddens = self.hidden_states(tokens, positions)
        x = self.norm(hiddens[-1])
        if targets is not None:
            out = linear_cross_entropy(x.reshape(b * t, -1), self.output_weight, targets.reshape(-1), compute_dtype=matmul_dtype(x))
        else:
            out = self.logits(x)
        return (out, hiddens) if return_hidden else out

    def hidden_states(self, tokens: torch.Tensor, positions: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The residual stream after the embedding and after every block (before the final norm); within
        `sequence_sharded`, of this rank's tokens of each row."""
        b, t = tokens.shape
        if positions is None:
            first = self.sequence_shard.rank * t if self.sequence_shard else 0
            positions = torch.arange(first, first + t, device=tokens.device).expand(b, t)
        x = self.embed(tokens)
        hiddens = [x]
        for layer in self.layers:
            x = layer(x, positions, None)
            hiddens.append(x)
        return hiddens

    def step_logits(self, tokens: torch.Tensor, step: Step) -> torch.Tensor:
        """Logits [M, V] at `step.logits_indices` of the engine's flat tokens [N]."""
        x, positions = self.embed(tokens)[None], step.positions[None]
        observe = step.observer
        if observe:
            observe(0, x[0, step.logits_indices])
        for i, layer in enumerate(self.layers):
            x = layer(x, positions, step)
            if observe:
                observe(i + 1, x[0, step.logits_indices])
        return self.logits(self.norm(x[0, step.logits_indices]))

    def logits(self, normed: torch.Tensor) -> torch.Tensor:
        """Output-head logits of final-norm outputs (also used for the logit lens)."""
        if self.head is None:
            return nn.functional.linear(normed, self.embed.weight)
        return self.head(normed)  # a module, so a quantized head runs its own kernel


def sequence_parallel_problem(model: Transformer, ranks: int, stage_heads: int = 0) -> str | None:
    """Why the model's dense forward cannot split its sequences over `ranks` context-parallel ranks, attending
    in stages of `stage_heads` heads (0: all at once), or None when it can: every mixer must exchange sequence
    shards for head shards, and the heads must split."""
    for i, layer in enumerate(model.layers):
        if not hasattr(layer.mixer, "sequence_shard"):
            return (f"layer {i}'s mixer ({model.cfg.mixer_for(i)}) does not run under context parallelism; "
                    "parallel.cp > 1 takes softmax, sparse, mamba2s, 2mamba and mamba2 layers")
    cfg = model.cfg
    if not any(hasattr(layer.mixer, "attend_dense") for layer in model.layers):
        return None  # linear layers pass states between ranks: no heads to split
    return check_stages(cfg.n_heads, cfg.n_kv_heads, ranks, stage_heads) if stage_heads else check_heads(
        cfg.n_heads, cfg.n_kv_heads, ranks)


@contextlib.contextmanager
def sequence_sharded(model: Transformer, shard: SequenceShard):
    """Within it, the model's dense forward takes this rank's T/P consecutive tokens of every row (at their
    positions in the whole row): attention layers exchange them with the other ranks of `shard` (Ulysses,
    UPipe) and linear layers carry the earlier ranks' states in, so the ranks together compute what one
    process computes on the whole rows."""
    modules = [model, *(layer.mixer for layer in model.layers)]
    for module in modules:
        module.sequence_shard = shard
    try:
        yield
    finally:
        for module in modules:
            module.sequence_shard = None


def matmul_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype autocast would use for a matrix product of `x` right now."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


def count_parameters(model: Transformer, include_embedding: bool = True) -> int:
    """Number of parameters (the tied head counted once); optionally without the embedding."""
    total = sum(p.numel() for p in model.parameters())
    return total if include_embedding else total - model.embed.weight.numel()


def flops_per_token(model: Transformer, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward), for MFU.

    6 FLOPs per matrix parameter (the output head included, the embedding lookup not;
    Kaplan et al., arXiv 2001.08361) plus what each mixer spends mixing positions
    (its `mixing_flops_per_token`, e.g. causal attention's scores and weighted sums).
    """
    matrix_params = sum(p.numel() for p in model.layers.parameters() if p.dim() >= 2)
    matrix_params += model.output_weight.numel()
    mixing = sum(layer.mixer.mixing_flops_per_token(seq_len) for layer in model.layers)
    return 6.0 * matrix_params + mixing
