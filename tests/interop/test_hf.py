import json

import pytest
import torch
from helpers import tiny_model
from safetensors.torch import load_file, save_file

from lmforge.errors import CheckpointError
from lmforge.interop.chat import render_chat
from lmforge.interop.hf import export_hf, load_hf

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("tie, bias", [(True, False), (False, False), (False, True)])
def test_transformers_loads_the_export_and_agrees(tmp_path, tokenizer, tie, bias):
    model = tiny_model(tokenizer.vocab_size, tie_embeddings=tie, attention_bias=bias).eval()
    export_hf(model, tokenizer, tmp_path / "hf")
    peer = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    assert type(peer).__name__ == ("Qwen2ForCausalLM" if bias else "LlamaForCausalLM")
    x = torch.randint(0, tokenizer.vocab_size, (2, 40))
    with torch.no_grad():
        assert (peer(x).logits - model(x)).abs().max() < 1e-4


def test_round_trip_is_exact(tmp_path, tokenizer):
    model = tiny_model(tokenizer.vocab_size, tie_embeddings=False)
    loaded = load_hf(export_hf(model, tokenizer, tmp_path / "hf"))
    assert loaded.model.cfg == model.cfg
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in model.state_dict().items())
    assert loaded.tokenizer.encode("x = [1, 2]") == tokenizer.encode("x = [1, 2]")


def test_transformers_tokenizer_matches(tmp_path, tokenizer):
    export_hf(tiny_model(tokenizer.vocab_size), tokenizer, tmp_path / "hf")
    peer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    for text in ["def f(x):\n    return x ** 2  # ✓ 日本", "<|im_start|>user\nhi<|im_end|>", "  a\t\tb\r\n 12345"]:
        assert peer(text, add_special_tokens=False)["input_ids"] == tokenizer.encode(text)
        assert peer.decode(tokenizer.encode(text)) == text
    messages = [{"role": "user", "content": "Hello?"}, {"role": "assistant", "content": "Hi."}, {"role": "user", "content": "Bye"}]
    assert peer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == render_chat(tokenizer, messages)


def test_sharded_weights_with_index(tmp_path, tokenizer):
    model = tiny_model(tokenizer.vocab_size)
    directory = export_hf(model, tokenizer, tmp_path / "hf")
    tensors = load_file(directory / "model.safetensors")
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, part in halves.items():
        save_file({n: tensors[n] for n in part}, directory / file)
    (directory / "model.safetensors").unlink()
    weight_map = {n: f for f, part in halves.items() for n in part}
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    loaded = load_hf(directory)
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in model.state_dict().items())


def test_bad_directories(tmp_path, tokenizer):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="has no config.json"):
        load_hf(tmp_path / "empty")
    directory = export_hf(tiny_model(tokenizer.vocab_size), tokenizer, tmp_path / "hf")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "architectures": ["GPTNeoXForCausalLM"]}))
    with pytest.raises(CheckpointError, match="architecture 'GPTNeoXForCausalLM' is not supported"):
        load_hf(directory)
    (directory / "config.json").write_text(json.dumps({**config, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}))
    with pytest.raises(CheckpointError, match="RoPE scaling 'yarn'"):
        load_hf(directory)
    (directory / "config.json").write_text(json.dumps(config))
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_hf(directory)


def test_mistral_sliding_window_bounds_the_context(tmp_path, tokenizer):
    directory = export_hf(tiny_model(tokenizer.vocab_size), tokenizer, tmp_path / "hf")
    config = json.loads((directory / "config.json").read_text())
    config.update(architectures=["MistralForCausalLM"], model_type="mistral", sliding_window=64)
    (directory / "config.json").write_text(json.dumps(config))
    assert load_hf(directory).model.cfg.max_seq_len == 64
