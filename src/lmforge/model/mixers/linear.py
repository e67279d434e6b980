"""Linear-attention mixers: Mamba-2S, 2Mamba, 2Mamba-E (2Mamba2Furious) and the Mamba-2 baseline.

Mongaras & Larson, "2Mamba2Furious: Linear in Complexity, Competitive in Accuracy"
(arXiv 2602.17363) strip Mamba-2 (Dao & Gu, arXiv 2405.21060) down to: a width-2 causal
depthwise convolution (with bias) of q, k, v and a per-head input-dependent decay
A_t = -softplus(h W_A). Mamba-2S keeps Mamba-2's value scaling by softplus(h W_dt) and an
output RMSNorm; 2Mamba squares the scores and normalises them by their sum (second-order
linear attention); 2Mamba-E exponentiates them (softmax attention with a decay bias,
quadratic, with a KV cache).

`model.linear_variant` picks how the three are configured:
- "authors" (the default): as the authors' code configures them. In gmongaras/2Mamba2Furious
  at commit 7ad98b5, GPT_Trainer/LlamaDecoderLayerClean.py, the `configs` entries
  "squared__sm_norm__A_mask_type_neg_softplus__in_conv_k_2" (2Mamba, line 817),
  "exp__sm_norm__A_mask_type_neg_softplus__in_conv_k_2" (2Mamba-E, line 890) and
  "linear__output_norm__A_mask_type_neg_softplus__in_conv_k_2__dt_on_values" (Mamba-2S, line 669)
  set norm_type "sm_norm" for 2Mamba and 2Mamba-E, so the output RMSNorm is built only for
  "output_norm" (line 1178) and only Mamba-2S has one; the decay projection `A_mask_proj`
  (line 1102) and `dt_proj` (line 1138) take `bias=config.attention_bias`, which
  GPT_Trainer/Trainer.py's `get_model` leaves at LlamaConfig's default, False; the input
  convolution has a bias (line 1112); no SiLU on q/k, no D residual, no z gate, no RoPE.
  The paper agrees: Algorithm 4 (Mamba-2S) ends in RMSNorm with W_dt, W_A without biases,
  and Section 5 builds 2Mamba from it by removing the RMSNorm, adding the softmax-style
  normalisation and squaring the q.k product.
- "lmforge": the variant lmforge shipped first, kept for its checkpoints (a config.json
  written before the setting existed loads as this one): an output RMSNorm on all three
  and a bias on the decay projection, initialised so the heads' memories spread over about
  7 to 700 tokens.
The lmforge variant's Mamba-2S also leaves its scores unscaled (the authors scale them by
1/sqrt(d), which its output norm nearly cancels). Both keep lmforge's initialisation of the
convolution and a 1e-6 added to 2Mamba's normaliser (the authors' kernel clamps it at 1e-8).

Training runs the chunked kernels of `lmforge.ops.linear_attention`. In the engine each
sequence keeps a fixed-size recurrent state plus the convolution's last inputs in its
state slot (2Mamba-E, quadratic, keeps keys, values and log-decays per token instead).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.config import ModelConfig
from lmforge.model.layers import RMSNorm
from lmforge.model.mixers import register_mixer
from lmforge.model.step import CacheEntry, CacheSpec, Group, Step, run_groups
from lmforge.ops.linear_attention import decayed_softmax_attention, linear_attention
from lmforge.ops.sequence_parallel import SequenceShard, previous_rank_tail
from lmforge.ops.paged import gather_tokens, write_tokens

NORMALISER_EPS = 1e-6


class ShortConv(nn.Module):
    """Causal depthwise convolution over time of width w; decoding keeps the last w-1 inputs.

    Computed as w shifted multiply-adds in the [B, T, C] layout: for these widths (2 and 4)
    that is several times faster on CPU, forward and backward, than a grouped conv1d with
    its transposes.
    """

    def __init__(self, channels: int, width: int):
        super().__init__()
        self.width = width
        self.weight = nn.Parameter(torch.zeros(channels, 1, width))
        self.bias = nn.Parameter(torch.zeros(channels))

    def reset(self) -> None:
        """Start as the identity on the current token plus small taps on the past ones."""
        with torch.no_grad():
            self.weight.normal_(std=0.02)
            self.weight[:, 0, -1] += 1.0
            self.bias.zero_()

    def forward(self, x: torch.Tensor, tail: torch.Tensor | None = None, shard: SequenceShard | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, C] -> (convolved [B, T, C], the last w-1 inputs [B, w-1, C] for the next call); under context
        parallelism the tail is the previous rank's last inputs."""
        t, past = x.shape[1], self.width - 1
        if shard is not None:
            tail = previous_rank_tail(x, past, shard)
        if tail is None:
            tail = x.new_zeros(x.shape[0], past, x.shape[2])
        padded = torch.cat([tail.to(x.dtype), x], dim=1)
        taps = self.weight.to(x.dtype)[:, 0]  # [C, w]; tap w-1 multiplies the current token
        out = x * taps[:, past] + self.bias.to(x.dtype)
        for i in range(past):
            out = out + padded[:, i : i + t] * taps[:, i]
        return out, padded[:, padded.shape[1] - past :]

    def tail_entry(self, dtype: torch.dtype) -> CacheEntry:
        """The per-sequence memory of the last w-1 inputs."""
        return CacheEntry((self.width - 1, self.weight.shape[0]), dtype)


def _decay_bias(n_heads: int, low: float = 1e-3, high: float = 1e-1) -> torch.Tensor:
    """Biases b with softplus(b) spread log-uniformly over [low, high] across heads: per-step
    log-decays from -0.001 to -0.1, i.e. memories of about 7 to 700 tokens."""
    rates = torch.logspace(math.log10(low), math.log10(high), n_heads)
    return torch.log(torch.expm1(rates))


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype scans and states accumulate in: fp32, or fp64 for fp64 models."""
    return torch.promote_types(dtype, torch.float32)


class StatefulMixer(nn.Module):
    """A mixer whose engine path keeps a convolution tail and a recurrent state per sequence.

    Subclasses implement `mix(x, tail, state, need_state, shard) -> (y, tail, state)` over a dense
    batch x [B, T, D] (tail and state None at a sequence's start; under context parallelism `shard`
    says which tokens of each row x holds) and `output(y)`.
    """

    layer: int
    sequence_shard: SequenceShard | None = None  # set by `model.transformer.sequence_sharded` while training

    def forward(self, x: torch.Tensor, positions: torch.Tensor, step: Step | None = None) -> torch.Tensor:
        if step is None:
            return self.output(self.mix(x, None, None, False, self.sequence_shard)[0])
        memory = step.memory.layers[self.layer]

        def run(group: Group, x: torch.Tensor) -> torch.Tensor:
            slots = group.state_slots
            past = (memory["conv"][slots], memory["ssm"][slots]) if group.has_past else (None, None)
            y, tail, state = self.mix(x, *past, True)
            memory["conv"][slots] = tail.to(memory["conv"].dtype)
            memory["ssm"][slots] = state
            return y

        return self.output(run_groups(step, run, x))


class DecayedAttention(nn.Module):
    """Shared body of Mamba-2S, 2Mamba and 2Mamba-E: conv'd q, k, v, a per-head decay, and (Mamba-2S, or
    every one in the "lmforge" variant) an output norm."""

    sum_normalised = True  # scores normalised by their sum: the authors put no output norm after them

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.n_heads, self.head_dim, self.chunk = cfg.n_heads, cfg.head_dim, cfg.linear_chunk_size
        inner = cfg.n_heads * cfg.head_dim
        lmforge = cfg.linear_variant == "lmforge"
        self.qkv_proj = nn.Linear(cfg.d_model, 3 * inner, bias=False)
        self.conv = ShortConv(3 * inner, width=2)
        self.decay_proj = nn.Linear(cfg.d_model, cfg.n_heads, bias=lmforge)
        self.out_norm = RMSNorm(inner, cfg.norm_eps) if lmforge or not self.sum_normalised else nn.Identity()
        # scores scaled by 1/sqrt(d), as the authors' kernels do; lmforge's Mamba-2S left them unscaled
        self.score_divisor = 1.0 if lmforge and not self.sum_normalised else math.sqrt(self.head_dim)
        self.o_proj = nn.Linear(inner, cfg.d_model, bias=False)

    def reset_mixer_parameters(self) -> None:
        self.conv.reset()
        if self.decay_proj.bias is not None:
            with torch.no_grad():
                self.decay_proj.bias.copy_(_decay_bias(self.n_heads))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, -1).transpose(1, 2)

    def inputs(self, x: torch.Tensor, tail: torch.Tensor | None, shard: SequenceShard | None = None):
        """q, k, v [B, H, T, d] after the convolution, log-decays [B, H, T] (<= 0), and the new conv tail."""
        qkv, tail = self.conv(self.qkv_proj(x), tail, shard)
        q, k, v = (self._heads(t) for t in qkv.chunk(3, dim=-1))
        log_decay = -F.softplus(self.decay_proj(x).to(accumulation_dtype(x.dtype))).transpose(1, 2)
        return q, k, v, log_decay, tail

    def output(self, y: torch.Tensor) -> torch.Tensor:
        """Merged heads [B, T, H * d] -> output norm (where there is one) -> projection."""
        return self.o_proj(self.out_norm(y))


class _StateSpaceAttention(StatefulMixer, DecayedAttention):
    """Mamba-2S (order 1) and 2Mamba (order 2): linear attention with a fixed-size state."""

    order = 1

    def _values(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return v

    def mix(self, x: torch.Tensor, tail, state, need_state: bool, shard: SequenceShard | None = None):
        q, k, v, log_decay, tail = self.inputs(x, tail, shard)
        work = accumulation_dtype(q.dtype)  # the scan accumulates in fp32 (fp64 for fp64)
        q, k, v = q.to(work) / self.score_divisor, k.to(work), self._values(x, v).to(work)
        if self.order == 2:
            v = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)  # last column accumulates the normaliser
        y, state = linear_attention(q, k, v, log_decay, self.order, self.chunk, state, need_state, shard)
        if self.order == 2:
            y = y[..., :-1] / (y[..., -1:] + NORMALISER_EPS)
        return y.transpose(1, 2).flatten(2).to(x.dtype), tail, state

    def state_shape(self) -> tuple[int, int]:
        """(features, values) of the recurrent state per head."""
        d = self.head_dim
        return (d, d) if self.order == 1 else (d * (d + 1) // 2, d + 1)

    def cache_spec(self, dtype: torch.dtype, block_size: int) -> CacheSpec:
        """Per sequence: the convolution's last inputs and the recurrent state; nothing per token."""
        state = CacheEntry((self.n_heads, *self.state_shape()), accumulation_dtype(dtype))
        return CacheSpec(per_sequence={"conv": self.conv.tail_entry(dtype), "ssm": state})

    def mixing_flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token: intra-chunk scores and sums plus the state's read and update."""
        features, values = self.state_shape()
        chunk = min(self.chunk, seq_len)
        return 6.0 * self.n_heads * (chunk * (self.head_dim + values) + 2 * features * values)


@register_mixer("mamba2s")
class Mamba2S(_StateSpaceAttention):
    """Mamba-2S: values scaled by softplus(h W_dt), first-order state S_t = exp(A_t) S_{t-1} + k_t^T v_t."""

    sum_normalised = False

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__(cfg, layer)
        self.dt_proj = nn.Linear(cfg.d_model, cfg.n_heads, bias=False)

    def _values(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return v * F.softplus(self.dt_proj(x)).transpose(1, 2)[..., None]


@register_mixer("2mamba")
class TwoMamba(_StateSpaceAttention):
    """2Mamba: y_i = sum_j (s q_i.k_j)^2 D_ij v_j / sum_j (s q_i.k_j)^2 D_ij, a second-order linear attention."""

    order = 2

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__(cfg, layer)
        self.chunk = cfg.second_order_chunk_size


@register_mixer("2mamba_e")
class TwoMambaE(DecayedAttention):
    """2Mamba-E: softmax of s q.k plus the cumulative log-decay, quadratic. The engine keeps keys,
    values and log-decays per token (the cumulative sums are taken when read) and the conv tail
    per sequence."""

    def forward(self, x: torch.Tensor, positions: torch.Tensor, step: Step | None = None) -> torch.Tensor:
        scale = 1 / math.sqrt(self.head_dim)
        if step is None:
            q, k, v, log_decay, _ = self.inputs(x, None)
            cum = log_decay.cumsum(-1).to(q.dtype)
            return self.output(decayed_softmax_attention(q, k, v, cum, cum, scale).transpose(1, 2).flatten(2))
        memory = step.memory.layers[self.layer]

        def run(group: Group, x: torch.Tensor) -> torch.Tensor:
            q, k, v, log_decay, tail = self.inputs(x, memory["conv"][group.state_slots] if group.has_past else None)
            memory["conv"][group.state_slots] = tail.to(memory["conv"].dtype)
            for name, new in (("k", k), ("v", v), ("log_decay", log_decay[..., None])):
                write_tokens(memory[name], group.slot_mapping, new.transpose(1, 2).flatten(0, 1))
            if group.has_past:  # whole blocks: keys past a sequence's end are masked by the positions
                k, v = (gather_tokens(memory[name], group.block_tables).transpose(0, 1).to(q.dtype) for name in ("k", "v"))
                k_cum = gather_tokens(memory["log_decay"], group.block_tables)[..., 0].transpose(0, 1).cumsum(-1)
                q_cum = k_cum.gather(-1, group.positions[:, None].expand(-1, self.n_heads, -1))
            else:
                k_cum = q_cum = log_decay.cumsum(-1)
            y = decayed_softmax_attention(q, k, v, q_cum.to(q.dtype), k_cum.to(q.dtype), scale, group.positions)
            return y.transpose(1, 2).flatten(2)

        return self.output(run_groups(step, run, x))

    def cache_spec(self, dtype: torch.dtype, block_size: int) -> CacheSpec:
        """Per token: keys, values and log-decays; per sequence: the convolution's last inputs."""
        kv = CacheEntry((self.n_heads, self.head_dim), dtype)
        decay = CacheEntry((self.n_heads, 1), accumulation_dtype(dtype))
        return CacheSpec(per_token={"k": kv, "v": kv, "log_decay": decay}, per_sequence={"conv": self.conv.tail_entry(dtype)})

    def mixing_flops_per_token(self, seq_len: int) -> float:
        return 6.0 * seq_len * self.n_heads * self.head_dim


@register_mixer("mamba2")
class Mamba2(StatefulMixer):
    """Mamba-2 (SSD; Dao & Gu, arXiv 2405.21060) as the baseline: conv + SiLU over (x, B, C), dt with a
    bias, A = -exp(A_log), a D skip connection, a SiLU(z) gate and a gated output RMSNorm."""

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.inner = cfg.mamba2_expand * cfg.d_model
        self.head_dim = cfg.head_dim
        self.n_heads = self.inner // cfg.head_dim
        self.state_size, self.chunk = cfg.mamba2_state, cfg.linear_chunk_size
        conv_channels = self.inner + 2 * self.state_size
        self.in_proj = nn.Linear(cfg.d_model, self.inner + conv_channels + self.n_heads, bias=False)
        self.conv = ShortConv(conv_channels, width=4)
        self.dt_bias = nn.Parameter(torch.zeros(self.n_heads))
        self.A_log = nn.Parameter(torch.zeros(self.n_heads))
        self.D = nn.Parameter(torch.ones(self.n_heads))
        self.out_norm = RMSNorm(self.inner, cfg.norm_eps)
        self.out_proj = nn.Linear(self.inner, cfg.d_model, bias=False)

    def reset_mixer_parameters(self) -> None:
        self.conv.reset()
        with torch.no_grad():
            self.dt_bias.copy_(_decay_bias(self.n_heads))  # softplus(dt_bias) in [1e-3, 1e-1], as in Mamba
            self.A_log.copy_(torch.log(torch.linspace(1, 16, self.n_heads)))
            self.D.fill_(1.0)

    def mix(self, x: torch.Tensor, tail, state, need_state: bool, shard: SequenceShard | None = None):
        b, t, _ = x.shape
        z, xbc, dt = self.in_proj(x).split([self.inner, self.inner + 2 * self.state_size, self.n_heads], dim=-1)
        xbc, tail = self.conv(xbc, tail, shard)
        xs, bmat, cmat = F.silu(xbc).split([self.inner, self.state_size, self.state_size], dim=-1)
        work = accumulation_dtype(x.dtype)
        dt = F.softplus(dt.to(work) + self.dt_bias.to(work)).transpose(1, 2)  # [B, H, T]
        log_decay = -torch.exp(self.A_log.to(work))[:, None] * dt
        xs = xs.view(b, t, self.n_heads, self.head_dim).transpose(1, 2).to(work)  # [B, H, T, P]
        q = cmat.to(work)[:, None].expand(b, self.n_heads, t, self.state_size)
        k = bmat.to(work)[:, None].expand(b, self.n_heads, t, self.state_size)
        v = xs * dt[..., None]
        y, state = linear_attention(q, k, v, log_decay, 1, self.chunk, state, need_state, shard)
        y = y + self.D.to(work)[:, None, None] * xs
        y = y.transpose(1, 2).reshape(b, t, self.inner).to(x.dtype)
        return y * F.silu(z), tail, state

    def output(self, y: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.out_norm(y))

    def cache_spec(self, dtype: torch.dtype, block_size: int) -> CacheSpec:
        """Per sequence: the convolution's last inputs and the SSD state."""
        state = CacheEntry((self.n_heads, self.state_size, self.head_dim), accumulation_dtype(dtype))
        return CacheSpec(per_sequence={"conv": self.conv.tail_entry(dtype), "ssm": state})

    def mixing_flops_per_token(self, seq_len: int) -> float:
        chunk = min(self.chunk, seq_len)
        return 6.0 * self.n_heads * (chunk * (self.state_size + self.head_dim) + 2 * self.state_size * self.head_dim)
