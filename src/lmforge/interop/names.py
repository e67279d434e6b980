"""Tensor names of the one model in Hugging Face and GGUF checkpoints, and llama.cpp's q/k row order."""

from __future__ import annotations

import torch

# (lmforge suffix, Hugging Face suffix, GGUF suffix) for each per-layer tensor.
LAYER_TENSORS = [
    ("mixer_norm.weight", "input_layernorm.weight", "attn_norm.weight"),
    ("mixer.q_proj.weight", "self_attn.q_proj.weight", "attn_q.weight"),
    ("mixer.k_proj.weight", "self_attn.k_proj.weight", "attn_k.weight"),
    ("mixer.v_proj.weight", "self_attn.v_proj.weight", "attn_v.weight"),
    ("mixer.q_proj.bias", "self_attn.q_proj.bias", "attn_q.bias"),
    ("mixer.k_proj.bias", "self_attn.k_proj.bias", "attn_k.bias"),
    ("mixer.v_proj.bias", "self_attn.v_proj.bias", "attn_v.bias"),
    ("mixer.o_proj.weight", "self_attn.o_proj.weight", "attn_output.weight"),
    ("mlp_norm.weight", "post_attention_layernorm.weight", "ffn_norm.weight"),
    ("mlp.gate_proj.weight", "mlp.gate_proj.weight", "ffn_gate.weight"),
    ("mlp.up_proj.weight", "mlp.up_proj.weight", "ffn_up.weight"),
    ("mlp.down_proj.weight", "mlp.down_proj.weight", "ffn_down.weight"),
]
GLOBAL_TENSORS = [
    ("embed.weight", "model.embed_tokens.weight", "token_embd.weight"),
    ("norm.weight", "model.norm.weight", "output_norm.weight"),
    ("head.weight", "lm_head.weight", "output.weight"),
]
HF, GGUF = 1, 2


def external_names(n_layers: int, fmt: int) -> dict[str, str]:
    """Map every lmforge tensor name to its name in format `fmt` (HF or GGUF)."""
    names = {ours: theirs[fmt - 1] for ours, *theirs in GLOBAL_TENSORS}
    prefix = "model.layers.{}." if fmt == HF else "blk.{}."
    for i in range(n_layers):
        for ours, *theirs in LAYER_TENSORS:
            names[f"layers.{i}.{ours}"] = prefix.format(i) + theirs[fmt - 1]
    return names


def to_llama_cpp_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder q/k rows from the half-split RoPE layout to llama.cpp's interleaved one.

    llama.cpp's converter applies this to Llama q and k weights: within each head, rows
    (i, i + d/2) become neighbours (2i, 2i + 1).
    """
    head_dim = w.shape[0] // n_heads
    return w.reshape(n_heads, 2, head_dim // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def from_llama_cpp_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Inverse of `to_llama_cpp_rows`: llama.cpp's interleaved rows back to half-split."""
    head_dim = w.shape[0] // n_heads
    return w.reshape(n_heads, head_dim // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)
