"""One entry point for every way a model can be named: pulled name, .gguf, HF directory, lmforge checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from lmforge.checkpoint import CONFIG, RUN_CHECKPOINT, Checkpoint, load_checkpoint
from lmforge.errors import CheckpointError
from lmforge.interop.gguf_file import load_gguf
from lmforge.interop.hf import load_hf, read_hf_config
from lmforge.interop.registry import MODELS, model_path


def load_model(spec: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load the model `spec` names, whatever its format, into the one model."""
    spec_str = str(spec)
    if spec_str in MODELS:
        path = model_path(spec_str)
        if not path.is_file():
            raise CheckpointError(f"model {spec_str!r} is not in the cache; run `lmforge pull {spec_str}` first")
        return load_gguf(path, device)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return load_gguf(path, device)
    if path.is_dir() and (path / CONFIG).is_file() and "lmforge" not in read_hf_config(path):
        return load_hf(path, device)
    if path.is_dir() and not (path / CONFIG).is_file() and not (path / RUN_CHECKPOINT).exists():
        read_hf_config(path)  # raises: no config.json
    if not path.exists():
        known = ", ".join(sorted(MODELS))
        raise CheckpointError(f"{spec_str} is neither a file, a directory nor a pullable model name ({known})")
    return load_checkpoint(path, device)
