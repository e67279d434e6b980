"""Weight quantization (RTN, GPTQ, AWQ, HQQ; int8, int4 g128, int4 g32) on the quickstart model and SmolLM2-135M.

Sections:
  kernels  one-row products on SmolLM2's layer shapes, weights cycled so they come from memory:
           fp32, bf16, and PyTorch's packed int8/int4 CPU kernels with bf16 and with fp32 activations
  quality  perplexity on held-out text and its increase over the float model, size on disk and
           quantization time, for every method and grid (calibration on other documents than the evaluation)
  speed    decode tokens/s at batch 1 (128 new tokens after a 128-token prompt): float32, bf16, int8, int4,
           beside the bound memory bandwidth / weight bytes read per token
  peer     llama.cpp (llama-cpp-python) on the same SmolLM2: its own Q8_0 / Q4_0 (written by
           llama_model_quantize from lmforge's f16 export) and Q4_1 (the pulled file), and lmforge's
           GPTQ models exported to GGUF: tokens/s and perplexity on the same windows
SmolLM2's float reference is the dequantized Q4_1 file: its weights already lie on a 4-bit grid in blocks of 32.
Needs `lmforge quickstart` (runs/quickstart) and `lmforge pull smollm2-135m`; the peer needs llama-cpp-python.
"""

from __future__ import annotations

import copy
import ctypes
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import machine, median_time, parser, print_table, write_json

from lmforge.checkpoint import WEIGHTS, load_checkpoint, save_checkpoint
from lmforge.config import DataConfig
from lmforge.data.loader import eval_windows
from lmforge.data.readers import read_corpus
from lmforge.data.split import choose_validation, id_hash
from lmforge.eval.perplexity import evaluate
from lmforge.interop.gguf_file import export_gguf
from lmforge.interop.load import load_model
from lmforge.interop.registry import model_path
from lmforge.quant.calibration import calibration_windows
from lmforge.quant.quantize import QuantSpec, quantize_model
from lmforge.serve.engine import EngineConfig, LLMEngine
from lmforge.serve.llm import stream
from lmforge.serve.params import SamplingParams

METHODS = ("rtn", "gptq", "gptq-ltr", "awq", "hqq")  # gptq-ltr: GPTQ without act-order (columns left to right)
GRIDS = (("int8", 8, None), ("int4 g128", 4, 128), ("int4 g32", 4, 32))
SMOLLM2_SHAPES = ((576, 576), (576, 192), (576, 1536), (1536, 576), (576, 49152))


def texts_of(model_name: str) -> tuple[list[str], list[str]]:
    """(calibration texts, evaluation texts): disjoint documents of the model's own kind of text.

    quickstart: its training split of the stdlib corpus / its validation split;
    SmolLM2: the pydoc English reference, nine tenths / one tenth by document hash.
    """
    if model_name == "quickstart":
        docs = list(read_corpus("stdlib"))
        val = choose_validation([(d.id, len(d.text.encode("utf-8"))) for d in docs], DataConfig.val_bytes)
        return [d.text for d in docs if d.id not in val], [d.text for d in docs if d.id in val]
    docs = list(read_corpus("pydoc"))
    return [d.text for d in docs if id_hash(d.id) % 10], [d.text for d in docs if id_hash(d.id) % 10 == 0]


def model_bytes_on_disk(model, loaded, tmp: Path, quantization: dict | None) -> int:
    out = save_checkpoint(tmp / "size", model, loaded.config, loaded.tokenizer, quantization=quantization)
    return (out / WEIGHTS).stat().st_size


def quality(name: str, loaded, args) -> list[dict]:
    calib_texts, eval_texts = texts_of(name)
    tok = loaded.tokenizer
    seq_len = min(512, loaded.model.cfg.max_seq_len - 1)
    windows = eval_windows(np.asarray(tok.encode_documents(eval_texts)), seq_len, args.eval_tokens)
    n_seqs, calib_len = (8, 256) if args.quick else (args.calib_seqs, 512)
    calib = calibration_windows(tok, calib_texts, n_seqs, calib_len, seed=0)
    token_bytes = tok.token_byte_lengths()
    base = loaded.model.eval()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ref = evaluate(base, windows, token_bytes, batch_size=4)
        rows.append({"model": name, "method": "float", "grid": "fp32", "ppl": ref["ppl"], "increase": 0.0,
                     "mb": model_bytes_on_disk(base, loaded, Path(tmp), None) / 2**20, "seconds": 0.0})
        print(f"  {name} float: perplexity {ref['ppl']:.3f} over {ref['tokens']} tokens", flush=True)
        for grid_name, bits, group in GRIDS:
            for method in METHODS:
                spec = QuantSpec(method.split("-")[0], bits, group, act_order=method != "gptq-ltr")
                model = copy.deepcopy(base)
                stats = quantize_model(model, spec, calib, progress=False)
                r = evaluate(model, windows, token_bytes, batch_size=4)
                rows.append({"model": name, "method": method, "grid": grid_name, "ppl": r["ppl"],
                             "increase": r["ppl"] / ref["ppl"] - 1, "seconds": stats["seconds"],
                             "mb": model_bytes_on_disk(model, loaded, Path(tmp), spec.to_dict()) / 2**20})
                print(f"  {name} {method} {grid_name}: perplexity {r['ppl']:.3f} ({rows[-1]['increase']:+.2%}), "
                      f"{stats['seconds']:.0f} s", flush=True)
                del model
    for r in rows:
        rtn = next(x for x in rows if x["grid"] == r["grid"] and x["method"] == "rtn") if r["method"] != "float" else None
        r["of_rtn_increase"] = r["increase"] / rtn["increase"] if rtn and rtn["increase"] > 0 else None
    return rows


def kernels(quick: bool) -> list[dict]:
    """Median microseconds of one-row products, each call on the next of enough weight copies to overflow the caches."""
    rows = []
    for k, n in SMOLLM2_SHAPES[:2] if quick else SMOLLM2_SHAPES:
        copies = max(2, (256 << 20) // (n * k * 4))
        w = [torch.randn(n, k) * 0.02 for _ in range(copies)]
        wb = [t.bfloat16() for t in w]
        w8 = [torch.randint(-127, 128, (n, k), dtype=torch.int8) for _ in range(copies)]
        w4 = [torch.ops.aten._convert_weight_to_int4pack_for_cpu(torch.randint(0, 16, (n, k), dtype=torch.int32), 2)
              for _ in range(copies)]
        group = 64 if k % 128 else 128
        sz = torch.rand(k // group, n, 2)
        x, xb = torch.randn(1, k), torch.randn(1, k).bfloat16()
        ones, onesb = torch.ones(n), torch.ones(n).bfloat16()
        variants = {
            "fp32": lambda i: F.linear(x, w[i]),
            "bf16": lambda i: F.linear(xb, wb[i]),
            "int8 bf16-act": lambda i: torch.ops.aten._weight_int8pack_mm(xb, w8[i], onesb),
            "int4 bf16-act": lambda i: torch.ops.aten._weight_int4pack_mm_for_cpu(xb, w4[i], group, sz.bfloat16()),
            "int8 fp32-act": lambda i: torch.ops.aten._weight_int8pack_mm(x, w8[i], ones),
            "int4 fp32-act": lambda i: torch.ops.aten._weight_int4pack_mm_for_cpu(x, w4[i], group, sz),
        }
        row = {"shape": f"{k}x{n}"}
        for label, fn in variants.items():
            counter = iter(range(10**9))
            row[label] = median_time(lambda: fn(next(counter) % copies), 10 if "fp32-act" in label else 40) * 1e6
        rows.append(row)
        print(f"  kernels {row}", flush=True)
    return rows


def read_bandwidth() -> float:
    """Bytes per second of summing a 512 MB tensor (what a memory-bound decode step can reach at best)."""
    t = torch.ones(128 << 20)
    return t.numel() * 4 / median_time(lambda: t.sum(), 5)


def weight_bytes_per_token(model) -> int:
    """Bytes of every matrix a decode step reads (block linears and the head; not the embedding lookup)."""
    total = 0
    for name, m in model.named_modules():
        if hasattr(m, "qweight"):
            total += sum(t.numel() * t.element_size() for t in (m.qweight, m.scales, m.zeros))
        elif isinstance(m, torch.nn.Linear):
            total += m.weight.numel() * m.weight.element_size()
    if model.head is None:
        total += model.embed.weight.numel() * model.embed.weight.element_size()
    return total


def decode_rate(model, tokenizer, prompt: list[int], n_new: int) -> tuple[float, float]:
    """(decode tokens/s after the first new token, prefill seconds) of greedy generation."""
    engine = LLMEngine(model, tokenizer, EngineConfig(max_num_seqs=1, dtype=model.embed.weight.dtype))
    stamps = []
    t0 = time.perf_counter()
    for _ in stream(engine, "decode", prompt, SamplingParams(max_tokens=n_new, temperature=0, ignore_eos=True)):
        stamps.append(time.perf_counter())
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]), stamps[0] - t0


def speed(name: str, loaded, quick: bool, bandwidth: float) -> list[dict]:
    n_new, repeats = (32, 1) if quick else (128, 3)
    tok = loaded.tokenizer
    prompt = tok.encode_documents(texts_of(name)[1])[:128]
    base = loaded.model.eval()
    variants = {"fp32": base, "bf16": copy.deepcopy(base).to(torch.bfloat16)}
    for label, spec in (("int8", QuantSpec("rtn", 8, None)), ("int4 g128", QuantSpec("rtn", 4, 128)),
                        ("int4 g32", QuantSpec("rtn", 4, 32))):
        variants[label] = copy.deepcopy(base)
        quantize_model(variants[label], spec, progress=False)
    rows = []
    for label, model in variants.items():
        runs = [decode_rate(model, tok, prompt, n_new) for _ in range(repeats)]
        weight_bytes = weight_bytes_per_token(model)
        rows.append({"model": name, "weights": label, "tokens_per_s": statistics.median(r[0] for r in runs),
                     "prefill_s": statistics.median(r[1] for r in runs), "weight_mb": weight_bytes / 2**20,
                     "bound_tokens_per_s": bandwidth / weight_bytes})
        print(f"  speed {name} {label}: {rows[-1]['tokens_per_s']:.1f} tokens/s", flush=True)
    for r in rows:
        r["vs_fp32"] = r["tokens_per_s"] / rows[0]["tokens_per_s"]
        r["of_bound"] = r["tokens_per_s"] / r["bound_tokens_per_s"]
    return rows


def peer(loaded, args) -> list[dict]:
    """llama.cpp's own quantizations and lmforge's GGUF exports of SmolLM2, on the same windows and prompt."""
    import llama_cpp
    from llama_cpp import Llama

    tok = loaded.tokenizer
    calib_texts, eval_texts = texts_of("smollm2")
    windows = eval_windows(np.asarray(tok.encode_documents(eval_texts)), 512, args.eval_tokens)
    prompt = tok.encode_documents(eval_texts)[:128]
    n_new = 32 if args.quick else 128
    threads = torch.get_num_threads()
    calib = calibration_windows(tok, calib_texts, 8 if args.quick else args.calib_seqs, 512, seed=0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        f16 = export_gguf(loaded.model, tok, tmp / "f16.gguf", "f16")
        files = {"llama.cpp Q4_1 (pulled file)": model_path("smollm2-135m")}
        for qtype in ("Q8_0", "Q4_0"):
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype}")
            params.nthread = threads
            out = tmp / f"{qtype}.gguf"
            if llama_cpp.llama_model_quantize(str(f16).encode(), str(out).encode(), ctypes.byref(params)) != 0:
                raise RuntimeError(f"llama_model_quantize failed for {qtype}")
            files[f"llama.cpp {qtype} (its quantizer)"] = out
        for label, spec in (("lmforge GPTQ int8 -> Q8_0", QuantSpec("gptq", 8, None)),
                            ("lmforge GPTQ int4 g128 -> Q4_1", QuantSpec("gptq", 4, 128))):
            model = copy.deepcopy(loaded.model)
            quantize_model(model, spec, calib, progress=False)
            files[label] = export_gguf(model, tok, tmp / f"{spec.bits}.gguf")
            del model
        for label, path in files.items():
            llm = Llama(model_path=str(path), n_ctx=1024, logits_all=True, n_threads=threads, verbose=False)
            nll, count = 0.0, 0
            for w in windows:
                ids = w.tolist()
                llm.reset()
                llm.eval(ids)
                z = np.array(llm.scores[: len(ids)], dtype=np.float64)[:-1]
                z -= z.max(axis=1, keepdims=True)
                logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
                nll -= float(logp[np.arange(len(ids) - 1), ids[1:]].sum())
                count += len(ids) - 1
            rates = []
            for _ in range(1 if args.quick else 3):
                stamps = []
                for _tok in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
                    stamps.append(time.perf_counter())
                    if len(stamps) == n_new:
                        break
                rates.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
            rows.append({"peer": label, "ppl": float(np.exp(nll / count)), "tokens_per_s": statistics.median(rates),
                         "mb": path.stat().st_size / 2**20})
            print(f"  peer {label}: perplexity {rows[-1]['ppl']:.3f}, {rows[-1]['tokens_per_s']:.1f} tokens/s", flush=True)
            del llm
    return rows


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sections", default="kernels,quality,speed,peer")
    p.add_argument("--models", default="quickstart,smollm2", help="comma-separated: quickstart, smollm2")
    p.add_argument("--checkpoint", default="runs/quickstart", help="the quickstart model (run directory or checkpoint)")
    p.add_argument("--calib-seqs", type=int, default=32, help="calibration sequences of 512 tokens (GPTQ, AWQ)")
    p.add_argument("--eval-tokens", type=int, default=8192, help="tokens scored per perplexity")
    args = p.parse_args()
    if args.quick:
        args.eval_tokens = min(args.eval_tokens, 2048)
    sections, names = args.sections.split(","), args.models.split(",")
    if args.quick:
        names = [n for n in names if n == "quickstart"]
    out = {"benchmark": "quantization", "quick": args.quick, "threads": torch.get_num_threads(), "machine": machine()}
    loaded = {}
    for name in names:
        if name == "quickstart":
            if not Path(args.checkpoint).exists():
                sys.exit(f"{args.checkpoint} does not exist: run `lmforge quickstart` first or pass --checkpoint")
            loaded[name] = load_checkpoint(args.checkpoint)
        else:
            loaded[name] = load_model("smollm2-135m")
    if "kernels" in sections:
        out["kernels"] = kernels(args.quick)
        print("\none-row products on SmolLM2's shapes, weights from memory: median microseconds")
        labels = [k for k in out["kernels"][0] if k != "shape"]
        print_table(out["kernels"], [("shape", "K x N", "s")] + [(k, k, ".0f") for k in labels])
    if "quality" in sections:
        out["quality"] = [r for name in names for r in quality(name, loaded[name], args)]
        print(f"\nperplexity on held-out text ({args.eval_tokens} tokens), GPTQ/AWQ calibrated on "
              f"{8 if args.quick else args.calib_seqs} x {256 if args.quick else 512} tokens of other documents")
        print_table(out["quality"], [("model", "model", "s"), ("method", "method", "s"), ("grid", "grid", "s"),
                                     ("ppl", "ppl", ".3f"), ("increase", "increase", "+.2%"),
                                     ("of_rtn_increase", "of RTN's increase", ".2f"), ("mb", "MB", ".1f"),
                                     ("seconds", "quantize s", ".1f")])
    if "speed" in sections:
        bandwidth = read_bandwidth()
        out["read_bandwidth_gb_s"] = bandwidth / 1e9
        out["speed"] = [r for name in names for r in speed(name, loaded[name], args.quick, bandwidth)]
        print(f"\ndecode at batch 1, greedy, {torch.get_num_threads()} threads; bound = read bandwidth "
              f"{bandwidth / 1e9:.1f} GB/s / weight bytes per token")
        print_table(out["speed"], [("model", "model", "s"), ("weights", "weights", "s"), ("tokens_per_s", "tokens/s", ".1f"),
                                   ("vs_fp32", "vs fp32", ".2f"), ("bound_tokens_per_s", "bound tok/s", ".0f"),
                                   ("of_bound", "of bound", ".0%"), ("weight_mb", "weights MB", ".0f"),
                                   ("prefill_s", "prefill s", ".2f")])
    if "peer" in sections and "smollm2" in loaded:
        out["peer"] = peer(loaded["smollm2"], args)
        print("\nllama.cpp on SmolLM2-135M: perplexity on the same windows, decode tokens/s")
        print_table(out["peer"], [("peer", "model file", "s"), ("ppl", "ppl", ".3f"), ("tokens_per_s", "tokens/s", ".1f"),
                                  ("mb", "MB", ".1f")])
    write_json(args.out, out)


if __name__ == "__main__":
    main()
