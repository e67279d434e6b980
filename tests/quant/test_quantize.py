"""Whole-model quantization: every method, checkpoints that load back bit-exactly, GGUF export, bad input."""

import copy

import numpy as np
import pytest
import torch
from helpers import tiny_model

from lmforge.checkpoint import load_checkpoint, save_checkpoint
from lmforge.config import ModelConfig, RunConfig
from lmforge.errors import LmforgeError
from lmforge.interop.gguf_file import export_gguf, load_gguf
from lmforge.quant.calibration import calibration_windows
from lmforge.quant.grid import QuantizationError
from lmforge.quant.layout import dequantize_model, is_quantized, quantized_modules
from lmforge.quant.linear import QuantLinear
from lmforge.quant.quantize import QuantSpec, quantize_model

VOCAB = 512


@pytest.fixture(scope="module")
def calib():
    return torch.randint(0, VOCAB, (6, 48), generator=torch.Generator().manual_seed(0))


def loss(model, x):
    with torch.no_grad():
        return float(model(x[:, :-1], targets=x[:, 1:]))


@pytest.mark.parametrize("method", ["rtn", "gptq", "awq", "hqq"])
@pytest.mark.parametrize("bits, group", [(4, 32), (8, None)])
def test_every_method_quantizes_every_linear_and_stays_close(method, bits, group, calib):
    model = tiny_model(VOCAB)
    x = torch.randint(0, VOCAB, (2, 40), generator=torch.Generator().manual_seed(1))
    base = loss(model, x)
    stats = quantize_model(model, QuantSpec(method, bits, group), calib, progress=False)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert not linears and len(quantized_modules(model)) == 2 * 7 + 1  # every block linear and the head
    assert stats["mean_relative_weight_error"] < (0.15 if bits == 4 else 0.01)
    assert abs(loss(model, x) - base) < (0.05 if bits == 4 else 0.005)
    assert torch.equal(model.embed.weight, model.head.dequantize())  # still tied


def test_gptq_and_awq_beat_rtn_on_the_model_loss(calib):
    """On a trained-like model with outlier channels, the calibrated methods lose less than RTN."""
    torch.manual_seed(0)
    base = tiny_model(VOCAB)
    with torch.no_grad():
        for block in base.layers:
            block.mixer_norm.weight[:4] *= 8  # loud input channels
            block.mlp_norm.weight[:4] *= 8
    x = calib[:, :]
    reference = base(x).log_softmax(-1)

    def kl(spec):
        model = copy.deepcopy(base)
        quantize_model(model, spec, calib, progress=False)
        with torch.no_grad():
            return float((reference.exp() * (reference - model(x).log_softmax(-1))).sum(-1).mean())

    rtn = kl(QuantSpec("rtn", 4, 32, head_bits=0))
    assert kl(QuantSpec("gptq", 4, 32, head_bits=0)) < 0.8 * rtn
    assert kl(QuantSpec("awq", 4, 32, head_bits=0)) < rtn


def test_checkpoint_round_trip_is_bit_exact(tmp_path, tokenizer, calib):
    model = tiny_model(tokenizer.vocab_size)
    quantize_model(model, QuantSpec("gptq", 4, 32), calib % tokenizer.vocab_size, progress=False)
    path = save_checkpoint(tmp_path / "q", model, RunConfig(model=model.cfg), tokenizer, quantization={"method": "gptq"})
    loaded = load_checkpoint(path)
    assert is_quantized(loaded.model)
    state, again = model.state_dict(), loaded.model.state_dict()
    assert state.keys() == again.keys()
    for key, value in state.items():
        assert torch.equal(again[key], value), key
    x = torch.randint(0, tokenizer.vocab_size, (1, 9))
    assert torch.equal(loaded.model(x), model(x))
    import json

    config = json.loads((path / "config.json").read_text())
    assert config["quantization"]["method"] == "gptq" and "architectures" not in config
    assert config["quantization"]["modules"]["layers.0.mixer.q_proj"] == {"bits": 4, "group_size": 32, "symmetric": False}
    float_size = (save_checkpoint(tmp_path / "f", tiny_model(tokenizer.vocab_size), RunConfig(model=model.cfg), tokenizer)
                  / "model.safetensors").stat().st_size
    assert (path / "model.safetensors").stat().st_size < 0.4 * float_size  # the tied embedding is not stored twice


def test_untied_head_and_float_head(calib):
    model = tiny_model(VOCAB, tie_embeddings=False)
    embed = model.embed.weight.clone()
    quantize_model(model, QuantSpec("rtn", 8, None), progress=False)
    assert isinstance(model.head, QuantLinear) and torch.equal(model.embed.weight, embed)
    model = tiny_model(VOCAB)
    quantize_model(model, QuantSpec("rtn", 4, 32, head_bits=0), progress=False)
    assert model.head is None and "head" not in quantized_modules(model)


def test_bad_input_is_refused_clearly(calib):
    model = tiny_model(VOCAB)
    with pytest.raises(QuantizationError, match="needs calibration"):
        quantize_model(model, QuantSpec("gptq"), None, progress=False)
    quantize_model(model, QuantSpec("rtn", 8, None), progress=False)
    with pytest.raises(QuantizationError, match="already quantized"):
        quantize_model(model, QuantSpec("rtn"), progress=False)
    with pytest.raises(QuantizationError, match="unknown method"):
        QuantSpec("gguf")
    with pytest.raises(QuantizationError, match="group size"):
        QuantSpec("rtn", 4, 100)
    assert issubclass(QuantizationError, LmforgeError)


def test_a_model_without_block_linears_is_refused():
    model = tiny_model(VOCAB)
    for block in model.layers:
        block.mixer = torch.nn.Identity()
        block.mlp = torch.nn.Identity()

    with pytest.raises(QuantizationError, match="no linear layers"):
        quantize_model(model, QuantSpec("rtn"), progress=False)


def test_short_calibration_data_says_so_and_uses_what_exists(tokenizer):
    said = []
    windows = calibration_windows(tokenizer, ["def f(x):\n    return x\n" * 20], n_seqs=128, seq_len=64, log=said.append)
    assert windows.shape[1] == 64 and 1 <= windows.shape[0] < 128 and "fewer than" in said[0]
    tiny = calibration_windows(tokenizer, ["hi"], n_seqs=4, seq_len=64, log=said.append)
    assert tiny.shape[0] == 1 and tiny.shape[1] < 64 and "one window" in said[1]
    a = calibration_windows(tokenizer, ["def f(x):\n    return x\n" * 400], 8, 32, seed=3)
    b = calibration_windows(tokenizer, ["def f(x):\n    return x\n" * 400], 8, 32, seed=3)
    assert torch.equal(a, b)


@pytest.mark.parametrize("head_group", [None, 32])
def test_gguf_q8_0_export_reads_back_as_our_dequantization(tmp_path, tokenizer, head_group):
    import gguf

    from lmforge.interop.names import GGUF, external_names, from_llama_cpp_rows

    model = tiny_model(tokenizer.vocab_size)
    quantize_model(model, QuantSpec("rtn", 8, None, head_group_size=head_group), progress=False)
    assert model.head.grid.group_size == head_group
    path = export_gguf(model, tokenizer, tmp_path / "q8.gguf")
    reader = gguf.GGUFReader(path)
    names = external_names(model.cfg.n_layers, GGUF)
    checked = 0
    for t in reader.tensors:
        ours = {v: k for k, v in names.items()}[t.name].rsplit(".", 1)[0]
        module = "head" if ours == "embed" else ours
        if module not in quantized_modules(model):
            continue
        assert t.tensor_type.name == "Q8_0"
        values = torch.from_numpy(np.array(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32))
        values = values.reshape(tuple(int(n) for n in reversed(t.shape)))
        if t.name.endswith(("attn_q.weight", "attn_k.weight")):
            values = from_llama_cpp_rows(values, model.cfg.n_heads if "attn_q" in t.name else model.cfg.n_kv_heads)
        assert torch.equal(values, quantized_modules(model)[module].dequantize()), t.name
        checked += 1
    assert checked == 2 * 7 + 1


def test_gguf_q4_1_export_runs_the_same_model(tmp_path, tokenizer):
    model = tiny_model(tokenizer.vocab_size)
    quantize_model(model, QuantSpec("hqq", 4, 32, head_bits=4), progress=False)
    loaded = load_gguf(export_gguf(model, tokenizer, tmp_path / "q4.gguf"))
    x = torch.randint(0, tokenizer.vocab_size, (1, 24))
    with torch.no_grad():
        ours, theirs = dequantize_model(copy.deepcopy(model))(x), loaded.model(x)
    assert float((ours - theirs).abs().max()) < 1e-2 * float(ours.abs().max())


def test_dequantized_model_is_a_plain_float_model():
    model = tiny_model(VOCAB)
    quantize_model(model, QuantSpec("rtn", 4, 32), progress=False)
    x = torch.randint(0, VOCAB, (1, 40))  # more rows than the packed kernels take: the float path
    with torch.no_grad():
        before = model(x)
        plain = dequantize_model(model)
        assert not is_quantized(plain) and plain.head is None
        torch.testing.assert_close(plain(x), before, rtol=1e-5, atol=1e-5)
    assert isinstance(plain.cfg, ModelConfig)


@torch.no_grad()
def test_linears_sharing_a_hessian_get_what_each_gets_alone():
    from lmforge.quant.gptq import gptq
    from lmforge.quant.quantize import block_linears, capture_inputs, gptq_shared

    torch.manual_seed(0)
    block = tiny_model(VOCAB).layers[0]
    hidden = [torch.randn(2, 24, block.mixer_norm.weight.shape[0])]
    linears = block_linears(block)
    hessians, _ = capture_inputs(block, list(linears), hidden, torch.arange(24).expand(2, -1), keep=False, bf16=False)
    assert hessians["mixer.q_proj"] is hessians["mixer.v_proj"]  # q, k, v read one input
    spec = QuantSpec("gptq", 4, 32)
    shared = gptq_shared(linears, hessians, spec)
    for name, lin in linears.items():
        alone = gptq(lin.weight, hessians[name].h, spec.grid, spec.damp, spec.act_order)
        assert all(torch.equal(a, b) for a, b in zip(shared[name], alone)), name
