"""GGUF files (llama.cpp's format) into and out of the one model.

Reading (`gguf_read`) dequantizes each tensor to fp32 as it is copied into the model: Q8_0 and Q4_0/1
with lmforge's vectorised `from_blocks`, every other type `gguf.quants.dequantize` knows (F32, F16,
BF16, Q5_0/1, K-quants, ...) with the `gguf` package, and undoes the row permutation llama.cpp's
converter applies to Llama q/k weights. Writing uses the `gguf` package's writer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from lmforge.checkpoint import Checkpoint, copy_tensors, is_softmax_only
from lmforge.config import ModelConfig, RunConfig
from lmforge.errors import CheckpointError
from lmforge.fileio import OutputKind, atomic_path, claim_output
from lmforge.interop.gguf_read import GGUFFile, GGUFTensor
from lmforge.interop.gguf_tokenizer import add_tokenizer_to_gguf, tokenizer_from_gguf
from lmforge.interop.names import GGUF, external_names, from_llama_cpp_rows, to_llama_cpp_rows
from lmforge.model.transformer import Transformer
from lmforge.quant.gguf_blocks import BLOCK_TYPES, exact_blocks, from_blocks, to_blocks
from lmforge.quant.layout import quantized_modules
from lmforge.quant.linear import QuantLinear
from lmforge.tokenizer import Tokenizer

SUPPORTED_ARCHITECTURES = ("llama", "qwen2")
EXPORT_TYPES = ("f32", "f16", "q8_0", "q4_0", "q4_1")
_PERMUTED = {"attn_q.weight": "n_heads", "attn_k.weight": "n_kv_heads"}


def _decimal(value: float) -> float:
    """The shortest decimal that a float32 metadata value stands for (1e-05, not 9.9999997e-06)."""
    return float(str(np.float32(value)))


def gguf_model_config(fields: dict, tensor_names: set[str], source: str) -> ModelConfig:
    """The model shape a GGUF file's metadata describes."""
    arch = fields.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise CheckpointError(f"{source}: architecture {arch!r} is not supported (supported: {', '.join(SUPPORTED_ARCHITECTURES)})")

    def get(key: str, default=None):
        value = fields.get(f"{arch}.{key}", default)
        if value is None:
            raise CheckpointError(f"{source}: metadata {arch}.{key} is missing")
        return value

    scaling = fields.get(f"{arch}.rope.scaling.type", "none")
    if scaling not in ("none", None):
        raise CheckpointError(f"{source}: RoPE scaling {scaling!r} is not supported yet")
    d_model, n_heads = int(get("embedding_length")), int(get("attention.head_count"))
    return ModelConfig(
        vocab_size=len(fields["tokenizer.ggml.tokens"]),
        d_model=d_model,
        n_layers=int(get("block_count")),
        n_heads=n_heads,
        n_kv_heads=int(get("attention.head_count_kv", n_heads)),
        head_dim=int(get("attention.key_length", d_model // n_heads)),
        d_ff=int(get("feed_forward_length")),
        rope_theta=_decimal(get("rope.freq_base", 10000.0)),
        norm_eps=_decimal(get("attention.layer_norm_rms_epsilon")),
        max_seq_len=int(get("context_length")),
        tie_embeddings="output.weight" not in tensor_names,
        attention_bias="blk.0.attn_q.bias" in tensor_names,
    )


def _dequantize(t: GGUFTensor, source: str) -> torch.Tensor:
    """fp32 values of a tensor in its torch shape (GGUF lists the fastest-varying dimension first)."""
    import gguf

    shape = tuple(int(n) for n in reversed(t.shape))
    qtype = gguf.GGMLQuantizationType(t.tensor_type)
    rows = t.data.reshape(int(np.prod(shape[:-1])), -1) if shape else t.data.reshape(1, -1)
    if qtype.name.lower() in BLOCK_TYPES:
        return from_blocks(rows, qtype.name.lower()).reshape(shape)
    try:
        values = gguf.quants.dequantize(rows, qtype)
    except NotImplementedError:
        raise CheckpointError(f"{source}: tensor {t.name} has type {qtype.name}, which cannot be dequantized") from None
    return torch.from_numpy(np.array(values, dtype=np.float32)).reshape(shape)


def _tensors(file: GGUFFile, cfg: ModelConfig, arch: str, source: str) -> Iterator[tuple[str, torch.Tensor]]:
    ours = {theirs: mine for mine, theirs in external_names(cfg.n_layers, GGUF).items()}
    for t in file.tensors:
        name = ours.get(t.name)
        if name is None:
            raise CheckpointError(f"{source}: tensor {t.name} is not part of a {arch} model lmforge can run")
        w = _dequantize(t, source)
        suffix = t.name.split(".", 2)[-1]
        if arch == "llama" and suffix in _PERMUTED:
            w = from_llama_cpp_rows(w, getattr(cfg, _PERMUTED[suffix]))
        yield name, w


def load_gguf(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a GGUF file into the one model (fp32) with its tokenizer and chat template."""
    path = Path(path)
    file = GGUFFile(path)
    cfg = gguf_model_config(file.fields, {t.name for t in file.tensors}, str(path))
    tokenizer = tokenizer_from_gguf(file.fields, str(path))
    model = Transformer(cfg, initialise=False)  # every weight is copied in
    copy_tensors(model, _tensors(file, cfg, file.fields["general.architecture"], str(path)), path)
    return Checkpoint(model.to(device), tokenizer, RunConfig(model=cfg), path)


GGUF_OUTPUT = OutputKind("GGUF file", magic=b"GGUF")


def export_gguf(model: Transformer, tokenizer: Tokenizer, path: str | Path, dtype: str | None = None,
                name: str = "lmforge", overwrite: bool = False) -> Path:
    """Write a softmax model as a GGUF file that llama.cpp runs.

    `dtype` (f32, f16, q8_0, q4_0, q4_1) is the type of every matrix; None means f16 for
    a float model and, for a quantized one, each layer's own grid (8-bit -> Q8_0, 4-bit ->
    Q4_1), written from its codes without re-rounding where the grids coincide. An existing
    file is replaced only if it is a GGUF file and `overwrite` is set.
    """
    import gguf

    cfg = model.cfg
    if not is_softmax_only(cfg):
        raise CheckpointError("only models whose every layer is softmax attention can be written as GGUF")
    if dtype is not None and dtype not in EXPORT_TYPES:
        raise CheckpointError(f"GGUF export type {dtype!r} is not supported here (choose {', '.join(EXPORT_TYPES)})")
    quantized = quantized_modules(model)
    file_dtype = dtype or ("q4_1" if any(m.grid.bits == 4 for m in quantized.values()) else "q8_0" if quantized else "f16")
    arch = "qwen2" if cfg.attention_bias else "llama"
    path = claim_output(path, GGUF_OUTPUT, overwrite=overwrite)
    with atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(tmp, arch)
        writer.add_name(name)
        writer.add_context_length(cfg.max_seq_len)
        writer.add_embedding_length(cfg.d_model)
        writer.add_block_count(cfg.n_layers)
        writer.add_feed_forward_length(cfg.d_ff)
        writer.add_head_count(cfg.n_heads)
        writer.add_head_count_kv(cfg.n_kv_heads)
        writer.add_key_length(cfg.head_dim)
        writer.add_value_length(cfg.head_dim)
        writer.add_rope_dimension_count(cfg.head_dim)
        writer.add_rope_freq_base(cfg.rope_theta)
        writer.add_layer_norm_rms_eps(cfg.norm_eps)
        writer.add_vocab_size(cfg.vocab_size)
        writer.add_file_type(getattr(gguf.LlamaFileType, FILE_TYPES[file_dtype]))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        add_tokenizer_to_gguf(writer, tokenizer)
        names = external_names(cfg.n_layers, GGUF)
        for ours, tensor in _export_tensors(model, quantized):
            theirs = names[ours]
            suffix = theirs.split(".", 2)[-1]
            rows = getattr(cfg, _PERMUTED[suffix]) if arch == "llama" and suffix in _PERMUTED else None
            if isinstance(tensor, QuantLinear):
                _add_quantized(writer, theirs, tensor, dtype, rows)
            else:
                w = tensor.detach().float().cpu()
                if rows is not None:
                    w = to_llama_cpp_rows(w, rows)
                _add_tensor(writer, theirs, w.numpy(), dtype or "f16")
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path


FILE_TYPES = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "q8_0": "MOSTLY_Q8_0", "q4_0": "MOSTLY_Q4_0", "q4_1": "MOSTLY_Q4_1"}


def _export_tensors(model: Transformer, quantized: dict[str, QuantLinear]):
    """(lmforge tensor name, float tensor or QuantLinear) for every tensor GGUF stores; a tied quantized
    head is written once, as the embedding, which llama.cpp then also uses as the output layer."""
    tied_head = model.cfg.tie_embeddings and "head" in quantized
    for name, tensor in model.state_dict().items():
        module, _, leaf = name.rpartition(".")
        if module in quantized:
            if leaf == "qweight" and not (tied_head and module == "head"):
                yield f"{module}.weight", quantized[module]
            elif leaf == "bias":
                yield name, tensor
        elif name == "embed.weight" and tied_head:
            yield name, quantized["head"]
        else:
            yield name, tensor


def _add_quantized(writer, name: str, layer: QuantLinear, dtype: str | None, permute_heads: int | None) -> None:
    import gguf

    qtype = dtype or ("q8_0" if layer.grid.bits == 8 else "q4_1")
    if qtype in BLOCK_TYPES and exact_blocks(layer, qtype):
        codes, scales, zeros = layer.codes(), layer.scales, layer.zeros
        if permute_heads is not None:
            codes, scales, zeros = (to_llama_cpp_rows(t, permute_heads) for t in (codes, scales, zeros))
        blocks = to_blocks(codes, scales, zeros, layer.grid.group_len(layer.in_features), qtype)
        writer.add_tensor(name, blocks, raw_dtype=getattr(gguf.GGMLQuantizationType, qtype.upper()))
        return
    w = layer.dequantize()
    if permute_heads is not None:
        w = to_llama_cpp_rows(w, permute_heads)
    _add_tensor(writer, name, w.numpy(), qtype)


def _add_tensor(writer, name: str, values: np.ndarray, dtype: str) -> None:
    import gguf

    qtype = getattr(gguf.GGMLQuantizationType, dtype.upper(), None)
    if values.ndim == 1 or dtype == "f32":  # llama.cpp keeps norms and biases in fp32
        writer.add_tensor(name, values.astype(np.float32))
    elif dtype == "f16" or values.shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]:  # rows the block type cannot cut
        writer.add_tensor(name, values.astype(np.float16))
    else:
        writer.add_tensor(name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)
