"""Hugging Face model directories into and out of the one model.

Reads `config.json` + `model.safetensors` (or shards with `model.safetensors.index.json`) +
`tokenizer.json` of Llama, Mistral and Qwen2 causal LMs, tensor by tensor; writes a
directory that `transformers.AutoModelForCausalLM.from_pretrained` loads unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from lmforge.checkpoint import Checkpoint, copy_tensors, hf_config, is_softmax_only
from lmforge.config import ModelConfig, RunConfig
from lmforge.errors import CheckpointError
from lmforge.fileio import OutputKind, atomic_dir, claim_output, write_json
from lmforge.interop.names import HF, external_names
from lmforge.model.transformer import Transformer
from lmforge.tokenizer import Tokenizer

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")
INDEX = "model.safetensors.index.json"


def read_hf_config(directory: Path) -> dict:
    """The parsed `config.json` of a Hugging Face directory."""
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory} has no config.json; give a Hugging Face model directory, a .gguf file or an lmforge checkpoint")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} holds a JSON {type(raw).__name__}, not an object of model settings; the file is corrupt")
    return raw


def hf_model_config(raw: dict, source: str) -> ModelConfig:
    """The lmforge model shape for a Hugging Face Llama / Mistral / Qwen2 config."""
    arch = (raw.get("architectures") or [None])[0]
    if arch not in SUPPORTED_ARCHITECTURES:
        raise CheckpointError(f"{source}: architecture {arch!r} is not supported (supported: {', '.join(SUPPORTED_ARCHITECTURES)})")
    scaling = raw.get("rope_scaling") or (raw.get("rope_parameters") or {})
    if scaling.get("rope_type", scaling.get("type", "default")) != "default":
        raise CheckpointError(f"{source}: RoPE scaling {scaling.get('rope_type', scaling.get('type'))!r} is not supported yet")
    if raw.get("mlp_bias"):
        raise CheckpointError(f"{source}: MLP biases are not supported")
    theta = raw.get("rope_theta", (raw.get("rope_parameters") or {}).get("rope_theta", 10000.0))
    max_len = raw.get("max_position_embeddings", 2048)
    window = raw.get("sliding_window") if raw.get("use_sliding_window", True) else None
    if window:  # within the window, sliding-window attention is plain causal attention
        max_len = min(max_len, window)
    n_heads = raw["num_attention_heads"]
    return ModelConfig(
        vocab_size=raw["vocab_size"],
        d_model=raw["hidden_size"],
        n_layers=raw["num_hidden_layers"],
        n_heads=n_heads,
        n_kv_heads=raw.get("num_key_value_heads", n_heads),
        head_dim=raw.get("head_dim") or raw["hidden_size"] // n_heads,
        d_ff=raw["intermediate_size"],
        rope_theta=float(theta),
        norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
        max_seq_len=max_len,
        tie_embeddings=bool(raw.get("tie_word_embeddings", False)),
        attention_bias=arch == "Qwen2ForCausalLM" or bool(raw.get("attention_bias", False)),
    )


def _weight_files(directory: Path) -> list[Path]:
    if (directory / INDEX).is_file():
        index = json.loads((directory / INDEX).read_text(encoding="utf-8"))
        return [directory / f for f in sorted(set(index["weight_map"].values()))]
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{directory} has no *.safetensors weights")
    return files


def _tensors(directory: Path, cfg: ModelConfig) -> Iterator[tuple[str, torch.Tensor]]:
    ours = {theirs: mine for mine, theirs in external_names(cfg.n_layers, HF).items()}
    for file in _weight_files(directory):
        try:
            with safe_open(str(file), framework="pt", device="cpu") as f:
                for name in f.keys():
                    if name.endswith("rotary_emb.inv_freq"):
                        continue
                    if cfg.tie_embeddings and name == "lm_head.weight":
                        continue
                    yield ours.get(name, name), f.get_tensor(name)
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{file} is truncated or corrupt ({e})") from None


def load_hf(directory: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a Hugging Face model directory into the one model (fp32)."""
    directory = Path(directory)
    raw = read_hf_config(directory)
    cfg = hf_model_config(raw, str(directory / "config.json"))
    tokenizer = Tokenizer.load(directory)
    if tokenizer.eos_id is None and raw.get("eos_token_id") is not None:
        eos = raw["eos_token_id"]
        tokenizer.eos_id = eos[0] if isinstance(eos, list) else eos
    model = Transformer(cfg, initialise=False)  # every weight is copied in
    copy_tensors(model, _tensors(directory, cfg), directory)
    return Checkpoint(model.to(device), tokenizer, RunConfig(model=cfg), directory)


HF_OUTPUT = OutputKind("Hugging Face model directory", "config.json", "architectures", frozenset({
    "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}))


def export_hf(model: Transformer, tokenizer: Tokenizer, directory: str | Path, overwrite: bool = False) -> Path:
    """Write a Hugging Face directory (config.json, model.safetensors, tokenizer files) for a softmax model.

    An existing directory is replaced only if it holds such an export and `overwrite` is set.
    """
    cfg = model.cfg
    if not is_softmax_only(cfg):
        raise CheckpointError("only models whose every layer is softmax attention can be exported to Hugging Face format")
    names = external_names(cfg.n_layers, HF)
    directory = claim_output(directory, HF_OUTPUT, overwrite=overwrite)
    with atomic_dir(directory) as tmp:
        write_json(tmp / "config.json", hf_config(cfg, tokenizer))
        write_json(tmp / "generation_config.json", {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id})
        weights = {names[k]: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save(tmp)
    return directory
