"""SmolLM2-135M (Q4_1 GGUF) in lmforge vs transformers vs llama.cpp: logits, agreement, speed.

All three read the same GGUF file and score the same token ids of an English passage in one process,
with the same thread count. lmforge and transformers dequantize the file to fp32; llama.cpp runs its
Q4_1 kernels (and rounds activations to 8 bits for them). Agreement is measured against lmforge:
next-token argmax agreement, per-token loss correlation, largest logit difference, the greedy
continuation; then greedy decode speed at batch 1 (median of repeats after a warm-up), recorded in
benchmarks/results/parity-llamacpp.json.
Needs `lmforge pull smollm2-135m`, `transformers` + `accelerate` + `gguf`, and `llama-cpp-python`
(which can load the llama.cpp built for the other peers: set LLAMA_CPP_LIB_PATH to its build/bin).
"""

from __future__ import annotations

from common import THREADS, parser, print_recorded, timings  # first: pins the thread pools before torch

import time
from importlib import metadata

import numpy as np
import torch
from record import record, spread
from tables import TABLES

from lmforge.data.readers import english_passage
from lmforge.interop.load import load_model
from lmforge.interop.registry import pull
from lmforge.serve.engine import EngineConfig
from lmforge.serve.llm import LLM
from lmforge.serve.params import SamplingParams


def token_losses(logits: np.ndarray, ids: list[int]) -> np.ndarray:
    """Negative log-likelihood of ids[1:] under logits[:-1] (float64)."""
    z = logits[:-1].astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(ids) - 1), ids[1:]]


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    n_tokens, n_decode, n_greedy, repeats = (256, 32, 32, 3) if args.quick else (1000, 128, 32, 5)
    gguf_path = pull("smollm2-135m")

    t = time.perf_counter()
    ours = load_model("smollm2-135m")
    load_ours = time.perf_counter() - t
    ids = ours.tokenizer.encode(english_passage(6 * n_tokens))[:n_tokens]

    from transformers import AutoModelForCausalLM

    t = time.perf_counter()
    hf = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    load_hf = time.perf_counter() - t

    from llama_cpp import Llama

    t = time.perf_counter()
    llm = Llama(model_path=str(gguf_path), n_ctx=2048, logits_all=True, n_threads=THREADS, n_threads_batch=THREADS, verbose=False)
    load_cpp = time.perf_counter() - t
    text = ours.tokenizer.decode(ids)
    same_tokens_cpp = llm.tokenize(text.encode(), add_bos=False, special=False) == ours.tokenizer.encode(text)

    x = torch.tensor([ids])
    with torch.no_grad():
        logits = {"lmforge": ours.model(x)[0].numpy(), "transformers": hf(x).logits[0].numpy()}
    llm.reset()
    llm.eval(ids)
    logits["llama.cpp"] = np.array(llm.scores[: len(ids)])

    losses = {k: token_losses(v, ids) for k, v in logits.items()}
    prompt = ids[:64]
    ours_llm = LLM(ours.model, ours.tokenizer, EngineConfig(max_num_seqs=1, dtype=torch.float32))

    def greedy(ids: list[int], n: int) -> list[int]:
        return ours_llm.generate([ids], SamplingParams(max_tokens=n, temperature=0, ignore_eos=True))[0].outputs[0].token_ids

    continuation = {"lmforge": greedy(prompt, n_greedy)}
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt]), max_new_tokens=n_greedy, do_sample=False)
    continuation["transformers"] = out[0, len(prompt):].tolist()
    llm.reset()
    cpp_tokens = []
    for tok in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
        cpp_tokens.append(tok)
        if len(cpp_tokens) == n_greedy:
            break
    continuation["llama.cpp"] = cpp_tokens

    def decode(name: str) -> int:
        short = ids[:16]
        if name == "lmforge":
            return len(greedy(short, n_decode))
        if name == "transformers":
            with torch.no_grad():
                out = hf.generate(torch.tensor([short]), max_new_tokens=n_decode, min_new_tokens=n_decode, do_sample=False)
            return out.shape[1] - len(short)
        n = 0
        for _ in llm.generate(short, temp=0.0, top_k=1, reset=True):
            n += 1
            if n == n_decode:
                break
        return n

    rows, raw = [], {}
    for name, load in (("lmforge", load_ours), ("transformers", load_hf), ("llama.cpp", load_cpp)):
        assert decode(name) == n_decode, f"{name} stopped before {n_decode} tokens"  # also the warm-up
        rates = [n_decode / seconds for seconds in timings(lambda: decode(name), repeats, warmup=0)]
        raw[name] = {"decode_tokens_per_s": rates, "greedy": continuation[name]}
        agree = float((logits[name].argmax(1) == logits["lmforge"].argmax(1)).mean())
        prefix = next((i for i, (a, b) in enumerate(zip(continuation[name], continuation["lmforge"])) if a != b), n_greedy)
        rows.append({
            "peer": name,
            "weights": "Q4_1 kernels" if name == "llama.cpp" else "fp32 (dequantized)",
            "argmax_agreement": agree,
            "loss_correlation": float(np.corrcoef(losses[name], losses["lmforge"])[0, 1]),
            "max_abs_logit_diff": float(np.abs(logits[name] - logits["lmforge"]).max()),
            "perplexity": float(np.exp(losses[name].mean())),
            "greedy_prefix_match": prefix,
            "load_s": load,
            "decode_tokens_per_s": spread(rates),
        })
    settings = {"model": "smollm2-135m", "tokens": len(ids), "prompt_tokens": len(prompt), "greedy_tokens": n_greedy,
                "decode_tokens": n_decode, "decode_prompt_tokens": 16, "repeats": repeats, "threads": THREADS,
                "same_tokens_llama_cpp": same_tokens_cpp}
    versions = {"llama_cpp_python": metadata.version("llama_cpp_python")}
    path = record("parity-llamacpp", settings, raw, {"parity": rows}, args.out, args.quick, versions)
    print_recorded({"parity": rows}, TABLES["parity-llamacpp"], {"parity": TITLE}, settings, path)


TITLE = ("SmolLM2-135M-Instruct Q4_1 on a {tokens}-token English passage, {threads} threads; agreement against "
         "lmforge; greedy match of {greedy_tokens} tokens after a {prompt_tokens}-token prompt; decode of "
         "{decode_tokens} greedy tokens at batch 1. llama.cpp tokenizes the passage identically: {same_tokens_llama_cpp}")


if __name__ == "__main__":
    main()
