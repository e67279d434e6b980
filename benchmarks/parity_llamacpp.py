"""SmolLM2-135M (Q4_1 GGUF) in lmforge vs transformers vs llama.cpp: logits, agreement, speed.

All three read the same GGUF file and score the same token ids of an English passage
(the pydoc reference text) in one process. Agreement is measured against lmforge: next-
token argmax agreement, per-token loss correlation, largest logit difference, greedy
continuations; then greedy decode speed of each at the machine's thread count.
Needs `lmforge pull smollm2-135m`, `transformers` + `accelerate` + `gguf`, and `llama-cpp-python`.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from common import machine, parser, print_table, write_json

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
    n_tokens, n_decode, n_greedy = (256, 32, 32) if args.quick else (1000, 128, 32)
    threads = torch.get_num_threads()
    path = pull("smollm2-135m")

    t = time.perf_counter()
    ours = load_model("smollm2-135m")
    load_ours = time.perf_counter() - t
    ids = ours.tokenizer.encode(english_passage(6 * n_tokens))[:n_tokens]

    from transformers import AutoModelForCausalLM

    t = time.perf_counter()
    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    load_hf = time.perf_counter() - t

    from llama_cpp import Llama

    t = time.perf_counter()
    llm = Llama(model_path=str(path), n_ctx=2048, logits_all=True, n_threads=threads, verbose=False)
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

    def decode_speed(name: str) -> float:
        short = ids[:16]
        t = time.perf_counter()
        if name == "lmforge":
            n = len(greedy(short, n_decode))
        elif name == "transformers":
            with torch.no_grad():
                n = hf.generate(torch.tensor([short]), max_new_tokens=n_decode, min_new_tokens=n_decode, do_sample=False).shape[1] - len(short)
        else:
            n = 0
            for _ in llm.generate(short, temp=0.0, top_k=1, reset=True):
                n += 1
                if n == n_decode:
                    break
        return n / (time.perf_counter() - t)

    rows = []
    for name, load in (("lmforge", load_ours), ("transformers", load_hf), ("llama.cpp", load_cpp)):
        agree = float((logits[name].argmax(1) == logits["lmforge"].argmax(1)).mean())
        prefix = next((i for i, (a, b) in enumerate(zip(continuation[name], continuation["lmforge"])) if a != b), n_greedy)
        rows.append({
            "peer": name,
            "argmax_agreement": agree,
            "loss_correlation": float(np.corrcoef(losses[name], losses["lmforge"])[0, 1]),
            "max_abs_logit_diff": float(np.abs(logits[name] - logits["lmforge"]).max()),
            "perplexity": float(np.exp(losses[name].mean())),
            "greedy_prefix_match": prefix,
            "load_seconds": load,
            "decode_tokens_per_second": decode_speed(name),
        })
    base = rows[0]["decode_tokens_per_second"]
    for r in rows:
        r["decode_vs_lmforge"] = r["decode_tokens_per_second"] / base
    print(f"\nSmolLM2-135M-Instruct Q4_1, {len(ids)}-token English passage, {threads} threads; "
          f"agreement against lmforge; greedy prefix of {n_greedy} tokens after a 64-token prompt; "
          f"decode {n_decode} greedy tokens. llama.cpp tokenizes the passage identically: {same_tokens_cpp}")
    print_table(rows, [("peer", "peer", "s"), ("argmax_agreement", "argmax agree", ".2%"),
                       ("loss_correlation", "loss corr", ".5f"), ("max_abs_logit_diff", "max |dlogit|", ".2e"),
                       ("perplexity", "ppl", ".3f"), ("greedy_prefix_match", "greedy match", "d"),
                       ("decode_tokens_per_second", "decode tok/s", ".1f"), ("decode_vs_lmforge", "vs lmforge", ".2f"),
                       ("load_seconds", "load s", ".1f")])
    write_json(args.out, {"benchmark": "parity_llamacpp", "tokens": len(ids), "same_tokens_llama_cpp": same_tokens_cpp,
                          "rows": rows, "machine": machine()})


if __name__ == "__main__":
    main()
