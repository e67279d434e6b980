"""Checkpoint directories: config.json, model.safetensors, tokenizer.json (+ optimizer.pt, trainer.json).

`config.json` carries Hugging Face Llama fields where the architecture allows, and the
full lmforge run config under the "lmforge" key. A checkpoint is written into a temporary
directory and swapped into place whole, so a crash never leaves a mix of two checkpoints.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from lmforge.config import ModelConfig, RunConfig, run_config_from_dict, to_dict
from lmforge.errors import CheckpointError, LmforgeError
from lmforge.fileio import OutputKind, atomic_dir, recover_dir, write_json
from lmforge.model.transformer import Transformer
from lmforge.quant.layout import apply_layout, derived_tensors, is_quantized, layout_of, tie_quantized_head
from lmforge.tokenizer import Tokenizer

CONFIG, WEIGHTS = "config.json", "model.safetensors"
OPTIMIZER, TRAINER = "optimizer.pt", "trainer.json"
RUN_CHECKPOINT = "checkpoint"  # a training run's checkpoint lives in <out>/checkpoint
CHECKPOINT_OUTPUT = OutputKind("lmforge checkpoint", CONFIG, "lmforge",
                               frozenset({CONFIG, WEIGHTS, OPTIMIZER, TRAINER, "tokenizer.json", "tokenizer_config.json"}))


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model, its tokenizer and the run config it was trained with."""

    model: Transformer
    tokenizer: Tokenizer
    config: RunConfig
    path: Path


def is_softmax_only(cfg: ModelConfig) -> bool:
    """Whether every layer uses softmax attention (so standard Llama-family tools can run the model)."""
    return all(cfg.mixer_for(i) == "softmax" for i in range(cfg.n_layers))


def hf_config(cfg: ModelConfig, tokenizer: Tokenizer) -> dict:
    """Hugging Face config fields describing `cfg`; with `architectures` (Llama, or Qwen2 when
    the attention has biases) only when every mixer is softmax."""
    fields = {
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "max_position_embeddings": cfg.max_seq_len,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": tokenizer.bos_id,
        "eos_token_id": tokenizer.eos_id,
        "pad_token_id": tokenizer.pad_id,
        "hidden_act": "silu",
        "attention_bias": cfg.attention_bias,
        "mlp_bias": False,
        "torch_dtype": "float32",
    }
    if is_softmax_only(cfg):
        arch, model_type = ("Qwen2ForCausalLM", "qwen2") if cfg.attention_bias else ("LlamaForCausalLM", "llama")
        fields = {"architectures": [arch], "model_type": model_type, **fields}
    return fields


def save_checkpoint(
    path: str | Path,
    model: Transformer,
    run_cfg: RunConfig,
    tokenizer: Tokenizer,
    training_state: dict | None = None,
    trainer_state: dict | None = None,
    quantization: dict | None = None,
    weights: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a checkpoint directory atomically; training state files only when given. `weights`: the model's
    tensors when `model` does not hold them whole (its shards under FSDP); default model.state_dict().

    A quantized model also records `quantization` (how it was made) and the layout of its
    quantized modules in config.json, so `load_checkpoint` rebuilds it exactly.
    """
    path = Path(path)
    skip: set[str] = set()
    with atomic_dir(path) as tmp:
        config = {**hf_config(run_cfg.model, tokenizer), "lmforge": to_dict(run_cfg)}
        if is_quantized(model):
            config.pop("architectures", None)  # packed weights: not loadable as a plain Llama
            config["quantization"] = {**(quantization or {}), "modules": layout_of(model)}
            skip = derived_tensors(model)
        write_json(tmp / CONFIG, config)
        weights = {k: v.detach().contiguous().cpu() for k, v in (weights or model.state_dict()).items() if k not in skip}
        save_file(weights, str(tmp / WEIGHTS), metadata={"format": "pt"})
        tokenizer.save(tmp)
        if training_state is not None:
            torch.save(training_state, tmp / OPTIMIZER)
        if trainer_state is not None:
            write_json(tmp / TRAINER, trainer_state)
    return path


def resolve_checkpoint_dir(path: str | Path) -> Path:
    """A checkpoint directory, or a training run directory holding one in `checkpoint/`."""
    path = Path(path)
    if (path / CONFIG).is_file():
        return path
    inner = recover_dir(path / RUN_CHECKPOINT)
    if (inner / CONFIG).is_file():
        return inner
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; give a checkpoint or training run directory")
    raise CheckpointError(f"{path} is not a checkpoint (no {CONFIG}); give a checkpoint or training run directory")


def read_run_config(ckpt_dir: Path) -> RunConfig:
    """The run config stored in a checkpoint's config.json."""
    return _read_config(ckpt_dir)[0]


# settings added after checkpoints were written without them, with the value that reproduces those checkpoints
EARLIER_DEFAULTS = {"model": {"linear_variant": "lmforge"}}


def with_earlier_defaults(run: dict) -> dict:
    """A stored run config with every later-added setting it lacks set to the behaviour it was written with."""
    return {**run, **{section: {**values, **run.get(section, {})} for section, values in EARLIER_DEFAULTS.items()}}


def _read_config(ckpt_dir: Path) -> tuple[RunConfig, dict | None]:
    try:
        raw = json.loads((ckpt_dir / CONFIG).read_text(encoding="utf-8"))
        return run_config_from_dict(with_earlier_defaults(raw["lmforge"])), raw.get("quantization")
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, LmforgeError) as e:
        raise CheckpointError(f"{ckpt_dir / CONFIG} is corrupt or not an lmforge config ({e})") from None


def copy_tensors(model: Transformer, tensors: Iterable[tuple[str, torch.Tensor]], source: str | Path,
                 derived: set[str] = frozenset()) -> None:
    """Copy named tensors into `model` one at a time, checking names, shapes and dtypes.

    Only one source tensor is alive at a time, so loading needs the model plus one tensor
    of memory, whatever the file format. `derived` names are computed after loading, not read.
    """
    expected = model.state_dict()
    seen: set[str] = set()
    for name, tensor in tensors:
        target = expected.get(name)
        if target is None:
            raise CheckpointError(f"{source}: tensor {name} has no place in the model config; the file and config disagree")
        if tensor.shape != target.shape:
            hint = " (a checkpoint from another vocabulary?)" if "embed" in name or "head" in name else ""
            raise CheckpointError(
                f"{source}: {name} has shape {tuple(tensor.shape)}, the config expects {tuple(target.shape)}{hint}"
            )
        if tensor.is_floating_point() != target.is_floating_point() or (not tensor.is_floating_point() and tensor.dtype != target.dtype):
            raise CheckpointError(f"{source}: {name} has dtype {tensor.dtype}, expected a {target.dtype} tensor")
        with torch.no_grad():
            target.copy_(tensor)
        seen.add(name)
    missing = sorted(set(expected) - seen - derived)
    if missing:
        raise CheckpointError(f"{source} lacks {len(missing)} tensor(s) the model needs, e.g. {missing[0]}")


def load_weights(model: Transformer, weights_path: Path, derived: set[str] = frozenset()) -> None:
    """Copy the tensors of an lmforge `model.safetensors` into `model`."""
    try:
        with safe_open(str(weights_path), framework="pt", device="cpu") as f:
            copy_tensors(model, ((name, f.get_tensor(name)) for name in f.keys()), weights_path, derived)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{weights_path} is truncated or corrupt ({e}); restore it or train again") from None


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load model, tokenizer and config from a checkpoint (or training run) directory."""
    ckpt_dir = resolve_checkpoint_dir(path)
    run_cfg, quantization = _read_config(ckpt_dir)
    tokenizer = Tokenizer.load(ckpt_dir)
    if tokenizer.vocab_size != run_cfg.model.vocab_size:
        raise CheckpointError(
            f"{ckpt_dir}: tokenizer.json has {tokenizer.vocab_size} tokens but the model has a vocabulary of "
            f"{run_cfg.model.vocab_size}; the tokenizer belongs to another checkpoint"
        )
    weights = ckpt_dir / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{weights} is missing; the checkpoint is incomplete")
    model = Transformer(run_cfg.model)
    derived: set[str] = set()
    if quantization is not None:
        apply_layout(model, quantization.get("modules", {}))
        derived = derived_tensors(model)
    load_weights(model, weights, derived)
    tie_quantized_head(model)
    return Checkpoint(model.to(device), tokenizer, run_cfg, ckpt_dir)


def load_training_state(ckpt_dir: Path) -> tuple[dict, dict]:
    """optimizer.pt contents and trainer.json of a training checkpoint."""
    opt_path, trainer_path = ckpt_dir / OPTIMIZER, ckpt_dir / TRAINER
    if not opt_path.is_file() or not trainer_path.is_file():
        raise CheckpointError(f"{ckpt_dir} has no optimizer state to resume from; start a new run without --resume")
    try:
        state = torch.load(opt_path, map_location="cpu", weights_only=False)
        trainer = json.loads(trainer_path.read_text(encoding="utf-8"))
    except Exception as e:  # torch.load raises many types on a damaged file
        raise CheckpointError(f"training state in {ckpt_dir} is corrupt ({e}); start a new run") from None
    return state, trainer
