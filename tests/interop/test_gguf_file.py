import numpy as np
import pytest
import torch
from helpers import tiny_model

from lmforge.errors import CheckpointError
from lmforge.interop.gguf_file import export_gguf, load_gguf
from lmforge.interop.gguf_tokenizer import tokenizer_from_gguf


@pytest.mark.parametrize("tie, bias", [(True, False), (False, False), (True, True)])
def test_f32_round_trip_is_exact(tmp_path, tokenizer, tie, bias):
    model = tiny_model(tokenizer.vocab_size, tie_embeddings=tie, attention_bias=bias)
    path = export_gguf(model, tokenizer, tmp_path / "m.gguf", dtype="f32")
    loaded = load_gguf(path)
    assert loaded.model.cfg == model.cfg
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v), k
    x = torch.randint(0, tokenizer.vocab_size, (2, 20))
    assert torch.equal(loaded.model(x), model(x))


@pytest.mark.parametrize("dtype, tol", [("f16", 2e-3), ("q8_0", 3e-2)])
def test_lower_precision_exports_stay_close(tmp_path, tokenizer, dtype, tol):
    model = tiny_model(tokenizer.vocab_size)
    loaded = load_gguf(export_gguf(model, tokenizer, tmp_path / f"m.{dtype}.gguf", dtype=dtype))
    for k, v in model.state_dict().items():
        w = loaded.model.state_dict()[k]
        assert (w - v).abs().max() <= tol * v.abs().max() + 1e-6, k
    f32 = export_gguf(model, tokenizer, tmp_path / "m.f32.gguf", dtype="f32")
    assert (tmp_path / f"m.{dtype}.gguf").stat().st_size < 0.6 * f32.stat().st_size


def test_file_is_llama_cpp_shaped(tmp_path, tokenizer):
    import gguf

    path = export_gguf(tiny_model(tokenizer.vocab_size), tokenizer, tmp_path / "m.gguf", dtype="q8_0")
    reader = gguf.GGUFReader(path)
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == "Q8_0" and types["blk.0.attn_norm.weight"] == "F32"
    assert reader.fields["general.architecture"].contents() == "llama"
    assert reader.fields["tokenizer.ggml.pre"].contents() == "gpt2"
    assert "output.weight" not in types  # tied embeddings are stored once


def test_tokenizer_survives_gguf(tmp_path, tokenizer):
    loaded = load_gguf(export_gguf(tiny_model(tokenizer.vocab_size), tokenizer, tmp_path / "m.gguf", dtype="f32"))
    tok = loaded.tokenizer
    for text in ["def f(x):\n    return x ** 2  # ✓ 日本", "<|im_start|>user\nhi<|im_end|>", "  spaces\t\ttabs\r\n", "12345 67"]:
        assert tok.encode(text) == tokenizer.encode(text)
        assert tok.decode(tok.encode(text)) == text
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.chat_template) == (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id,
                                                                       tokenizer.chat_template)
    assert tok.encode("<|im_end|>") == [tokenizer.hf.token_to_id("<|im_end|>")]


def _write(path, arch):
    import gguf

    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_bad_gguf_files(tmp_path, tokenizer):
    _write(tmp_path / "mamba.gguf", arch="mamba")
    with pytest.raises(CheckpointError, match="mamba.gguf: architecture 'mamba' is not supported"):
        load_gguf(tmp_path / "mamba.gguf")
    good = export_gguf(tiny_model(tokenizer.vocab_size), tokenizer, tmp_path / "good.gguf", dtype="f32")
    data = good.read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="cut.gguf is not a readable GGUF file"):
        load_gguf(tmp_path / "cut.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"GGUF" + b"\xff" * 64)
    with pytest.raises(CheckpointError, match="not a readable GGUF"):
        load_gguf(tmp_path / "junk.gguf")
    with pytest.raises(CheckpointError, match="not found"):
        load_gguf(tmp_path / "missing.gguf")


def test_unsupported_tokenizers():
    with pytest.raises(CheckpointError, match="x.gguf: tokenizer model 'llama' is not supported"):
        tokenizer_from_gguf({"tokenizer.ggml.model": "llama"}, "x.gguf")
    with pytest.raises(CheckpointError, match="pre-tokenizer 'weird' is not supported"):
        tokenizer_from_gguf({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "weird"}, "x.gguf")


def test_unsupported_tensor_type_names_the_tensor(tmp_path, tokenizer, monkeypatch):
    import gguf

    path = export_gguf(tiny_model(tokenizer.vocab_size), tokenizer, tmp_path / "m.gguf", dtype="f32")

    def refuse(data, qtype):
        raise NotImplementedError(qtype)

    monkeypatch.setattr(gguf.quants, "dequantize", refuse)
    with pytest.raises(CheckpointError, match="tensor token_embd.weight has type F32, which cannot be dequantized"):
        load_gguf(path)


def test_only_softmax_models_and_known_types_export(tmp_path, tokenizer):
    with pytest.raises(CheckpointError, match="export type 'q4_k'"):
        export_gguf(tiny_model(tokenizer.vocab_size), tokenizer, tmp_path / "x.gguf", dtype="q4_k")
    assert not (tmp_path / "x.gguf").exists()
