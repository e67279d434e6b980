"""Quantization: lmforge's RTN / GPTQ / AWQ / HQQ GGUF exports beside llama.cpp's own quantizer, on SmolLM2-135M.

Sections (all by default, or pick with --sections; each is recorded in benchmarks/results/quantization.json as
it ends, and the tables of sections not run stay):
  formats8, formats4  every file runs in llama.cpp itself. The reference is SmolLM2's weights as an F16 GGUF
           (lmforge's export). For each GGUF type both can write (Q8_0 in formats8, Q4_1 in formats4):
           llama-quantize of that F16 file, without and (Q4_1 only: Q8_0 ignores one) with an importance matrix
           from llama-imatrix, and lmforge's RTN, GPTQ, AWQ and HQQ in that type (groups of 32 = the GGUF block,
           written from lmforge's codes; the 8-bit head, the tied embedding, in Q8_0's blocks of 32 too). formats4 adds llama.cpp's Q4_0 and Q4_K_M (+- importance matrix) as
           reference points lmforge does not write. llama.cpp's same-type files keep the embedding in Q8_0, as
           lmforge's export does. For each file: size, llama-perplexity's perplexity and KL divergence from the F16
           reference (`--kl-divergence-base`, then `--kl-divergence`) on held-out code (the standard library's
           validation split) and prose (pydoc topics), leaving out every document that shares text with a
           calibration window of any seed, and llama-bench's decode tokens/s (tgN, 2 threads, median of
           --bench-repeats rounds, each running every file of the section once after all were scored). GPTQ,
           AWQ and llama-imatrix read the same calibration text: the library's default calibration set
           (`calibration_set`), drawn per seed, its windows written to a file as text. Seeded rows
           are mean +- std over the seeds; the claims tables say, per type and text, whether each lmforge method's
           KL divergence is separated from llama.cpp's lowest of that type and from RTN's.
  kernels  one-row products on SmolLM2's layer shapes, weights cycled so they come from memory: fp32, bf16, and
           PyTorch's packed int8/int4 CPU kernels with bf16 and with fp32 activations (microseconds)
  speed    lmforge's engine, batch 1, 128 greedy tokens after a 128-token prompt: fp32, bf16 and RTN int8, int4
           g128, int4 g32 packed layers, beside the bound read bandwidth / weight bytes per token
SmolLM2-135M-Instruct is published here only as a Q4_1 GGUF (`lmforge pull smollm2-135m`): the F16 reference holds
those weights, whose 4-bit values already lie on a Q4_1 grid of blocks of 32, so a Q4_1 file of them loses almost
nothing if its quantizer finds that grid again (llama.cpp's min/max rounding and HQQ's float zero points can; RTN's
and GPTQ's integer zero points cannot). Q8_0, Q4_0 and Q4_K_M use other grids. `--model` takes a float checkpoint.

    python benchmarks/quantization.py --sections formats8,kernels,speed  # about 45 minutes on 2 quiet cores
    python benchmarks/quantization.py --sections formats4                # about 55 minutes (AVX2: over 2 hours)
    python benchmarks/quantization.py --quick                            # Q4_1 only, one seed, short texts
Needs `lmforge pull smollm2-135m` and llama.cpp's tools (see --llama-bin and MEASUREMENTS.md).
"""

from __future__ import annotations

from common import THREADS  # first: it pins the thread pools before torch is imported

import copy
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from common import parser, print_recorded, timings
from llamacpp import LlamaCpp, add_bin_argument, describe
from record import over_seeds, record, separated, spread
from tables import TABLES

from lmforge.data.readers import read_corpus
from lmforge.eval.perplexity import evaluation_texts
from lmforge.interop.gguf_file import export_gguf
from lmforge.interop.load import load_model
from lmforge.quant import DEFAULT_CALIBRATION, DEFAULT_WINDOW_LEN, DEFAULT_WINDOWS
from lmforge.quant.calibration import calibration_set
from lmforge.quant.gguf_blocks import BLOCK, exact_blocks
from lmforge.quant.layout import quantized_modules
from lmforge.quant.quantize import CALIBRATED, METHODS, QuantSpec, quantize_model
from lmforge.serve.engine import EngineConfig, LLMEngine
from lmforge.serve.llm import stream
from lmforge.serve.params import SamplingParams

AREA = "quantization"
FORMAT_SECTIONS = {"formats8": ("Q8_0",), "formats4": ("Q4_1", "Q4_0", "Q4_K_M")}  # recorded apart
LMFORGE_BITS = {"Q8_0": 8, "Q4_1": 4}  # the GGUF types lmforge writes from its own codes (groups of 32)
IMATRIX_TYPES = ("Q4_1", "Q4_0", "Q4_K_M")  # llama-quantize uses an importance matrix for these (not for Q8_0)
SAME_EMBEDDING = "q8_0"  # lmforge's export writes its 8-bit head (the tied embedding) as Q8_0
EVAL_SOURCES = {"code": "stdlib", "prose": "pydoc"}  # `evaluation_texts`: stdlib's validation split, pydoc
CHARS_PER_TOKEN = 6  # generous, so an evaluation file always holds the tokens asked for
SMOLLM2_SHAPES = ((576, 576), (576, 192), (576, 1536), (1536, 576), (576, 49152))
SPEED_WEIGHTS = {"int8": QuantSpec("rtn", 8, None), "int4 g128": QuantSpec("rtn", 4, 128),
                 "int4 g32": QuantSpec("rtn", 4, 32)}
FORMATS_TITLE = ("GGUF files in llama.cpp: size, perplexity and KL divergence from F16 ({ctx}-token chunks, "
                 "{scored} scored tokens per text), decode tg{tg} tokens/s; seeded rows over {seeds} seeds")
CLAIMS_TITLE = "rankings by KL divergence: each lmforge method against llama.cpp's lowest file of its type, and RTN"
TITLES = {
    "formats8": FORMATS_TITLE,
    "claims8": CLAIMS_TITLE,
    "formats4": FORMATS_TITLE,
    "claims4": CLAIMS_TITLE,
    "kernels": "one-row products on SmolLM2's shapes, weights from memory: median microseconds (min-max)",
    "speed": "lmforge decode at batch 1, greedy, {n_new} tokens after a {prompt}-token prompt, {threads} threads",
}


class Recorder:
    """Records each section's settings, raw measurements and tables as it ends, and prints its tables."""

    def __init__(self, args, versions: dict):
        self.args, self.versions = args, versions
        self.settings = {"threads": THREADS, "quick": args.quick, "model": args.model}
        self.raw, self.summary = {}, {}

    def add(self, section: str, settings: dict, raw, tables: dict[str, list[dict]]) -> None:
        self.settings[section], self.raw[section] = settings, raw
        self.summary.update(tables)
        path = record(AREA, self.settings, self.raw, self.summary, self.args.out, self.args.quick, self.versions,
                      keep_others=True)
        print_recorded(tables, TABLES[AREA], TITLES, settings, path)


# formats: the files, their measurements, the tables


def probes(texts: list[str], size: int = 64, step: int = 200) -> list[str]:
    """Short pieces of each text, `step` characters apart: a document holding one shares text with it."""
    return [t[i: i + size] for t in texts for i in range(0, max(len(t) - size, 1), step)]


def held_out_text(texts: list[str], used: list[str], n_chars: int) -> str:
    """Texts that share no piece with the `used` (calibration) texts, in a fixed mixed order, up to `n_chars`."""
    pieces = probes(used)
    parts, size = [], 0
    for text in sorted(texts, key=lambda t: zlib.crc32(t.encode("utf-8"))):
        if size >= n_chars:
            break
        if text.strip() and not any(p in text for p in pieces):
            parts.append(text)
            size += len(text)
    return "\n\n".join(parts)


def calibration_text(tok, windows: torch.Tensor) -> str:
    """The calibration windows as text, one after another: what llama-imatrix reads."""
    return "\n\n".join(tok.decode(w.tolist()) for w in windows)


def lmforge_file(model, tok, fmt: str, method: str, windows: torch.Tensor | None, path: Path) -> dict:
    """Quantize a copy of `model` with `method` on the grid of GGUF type `fmt` and export it; whether every layer
    was written from lmforge's own codes (else the exporter re-rounded it to the type; the 8-bit head is Q8_0)."""
    model = copy.deepcopy(model)
    spec = QuantSpec(method, LMFORGE_BITS[fmt], BLOCK, head_group_size=BLOCK)  # the head in Q8_0's blocks, as llama.cpp's
    stats = quantize_model(model, spec, windows, progress=False)
    export_gguf(model, tok, path)
    layers = quantized_modules(model).values()
    kept = all(exact_blocks(m, "q8_0" if m.grid.bits == 8 else fmt.lower()) for m in layers)
    return {"quantize_s": stats["seconds"], "codes_kept": kept}


def measure(llama: LlamaCpp, path: Path, bases: dict[str, Path], args) -> dict:
    """A file's size, types and KL statistics per evaluation text."""
    out = {"bytes": path.stat().st_size, "types": describe(path)}
    for text, base in bases.items():
        out[text] = llama.kl_divergence(path, base, args.ctx, args.chunks)
    return out


def decode_speeds(llama: LlamaCpp, paths: dict, args) -> dict[object, list[float]]:
    """llama-bench's tg tokens/s of each file, in rounds that run every file once, so that a machine that speeds
    up or slows down during the section moves every file alike (files of the same tensor types run the same
    kernels: their speeds differ only by the machine's drift)."""
    tg = {key: [] for key in paths}
    for _ in range(args.bench_repeats):
        for key, path in paths.items():
            tg[key] += llama.bench(path, 0, args.tg, 1)["tg"]
    return tg


def file_plan(formats: list[str], seeds: list[int]) -> list[dict]:
    """Every quantized file to make: (type, tool, method, seed); seed None for the files no calibration draws."""
    plan = []
    for fmt in formats:
        plan.append({"format": fmt, "tool": "llama.cpp", "method": "llama-quantize", "seed": None})
        if fmt in IMATRIX_TYPES:
            imatrix = {"format": fmt, "tool": "llama.cpp", "method": "llama-quantize + imatrix"}
            plan += [{**imatrix, "seed": s} for s in seeds]
        if fmt in LMFORGE_BITS:
            for method in METHODS:
                for seed in seeds if method in CALIBRATED else [None]:
                    plan.append({"format": fmt, "tool": "lmforge", "method": method, "seed": seed})
    return plan


def make_file(entry: dict, loaded, llama: LlamaCpp, f16: Path, calib: dict, work: Path) -> tuple[Path, dict]:
    """Write one planned file; returns its path and how it was made."""
    fmt, seed = entry["format"], entry["seed"]
    path = work / f"{fmt}-{entry['tool']}-{entry['method']}-{seed}.gguf".replace(" ", "").replace("+", "-")
    t = time.perf_counter()
    if entry["tool"] == "lmforge":
        windows = calib[seed]["windows"] if seed is not None else None
        return path, lmforge_file(loaded.model, loaded.tokenizer, fmt, entry["method"], windows, path)
    imatrix = calib[seed]["imatrix"] if seed is not None else None
    llama.quantize(f16, path, fmt, imatrix, None if fmt == "Q4_K_M" else SAME_EMBEDDING)
    return path, {"quantize_s": time.perf_counter() - t, "codes_kept": None}


def calibrate(tok, args, seeds: list[int], work: Path) -> dict:
    """Per seed: lmforge's calibration windows (the library's calibration set) and the same windows as a text file,
    which llama-imatrix reads."""
    calib = {}
    for seed in seeds:
        windows = calibration_set(tok, args.calib, args.calib_seqs, args.calib_len, seed)
        text = work / f"calibration-{seed}.txt"
        text.write_text(calibration_text(tok, windows), encoding="utf-8")
        calib[seed] = {"windows": windows, "text": text, "imatrix": None, "imatrix_s": None}
    return calib


def importance_matrices(llama: LlamaCpp, f16: Path, calib: dict, ctx: int, work: Path) -> None:
    """llama-imatrix's importance matrix of each seed's calibration text, computed with the F16 reference."""
    for seed, c in calib.items():
        t = time.perf_counter()
        c["imatrix"] = llama.imatrix(f16, c["text"], work / f"imatrix-{seed}.gguf", ctx)
        c["imatrix_s"] = time.perf_counter() - t
        print(f"  imatrix of calibration seed {seed}: {c['imatrix_s']:.0f} s", flush=True)


def row_key(entry: dict) -> tuple:
    return entry["format"], entry["tool"], entry["method"]


def summary_rows(reference: dict, files: list[dict], texts: list[str]) -> list[dict]:
    """One row per (type, tool, method): quality figures over its seeds, size and decode speed of its first file."""
    rows = [reference]
    groups: dict[tuple, list[dict]] = {}
    for f in files:
        groups.setdefault(row_key(f), []).append(f)
    for (fmt, tool, method), group in groups.items():
        first = group[0]
        row = {"format": fmt, "tool": tool, "method": method, "types": first["types"], "mib": first["bytes"] / 2**20,
               "seeds": len(group) if first["seed"] is not None else None, "codes_kept": first["codes_kept"],
               "tg_tokens_per_s": spread(first["tg"]),
               "quantize_s": over_seeds([f["quantize_s"] for f in group])}
        for text in texts:
            for stat in ("ppl", "kld", "same_top", "kld_p99"):
                row[f"{stat}_{text}"] = over_seeds([f[text][stat] for f in group])
        rows.append(row)
    return rows


def claim_rows(rows: list[dict], texts: list[str]) -> list[dict]:
    """Per type with lmforge files and per text: each lmforge method's mean KL divergence against llama.cpp's
    lowest of that type and against lmforge's RTN, with whether each gap exceeds the spread over seeds."""
    claims = []
    for fmt in dict.fromkeys(r["format"] for r in rows if r["tool"] == "lmforge" and r["format"] in LMFORGE_BITS):
        ours = [r for r in rows if r["format"] == fmt and r["tool"] == "lmforge"]
        peers = [r for r in rows if r["format"] == fmt and r["tool"] == "llama.cpp"]
        rtn = next(r for r in ours if r["method"] == "rtn")
        for text in texts:
            key = f"kld_{text}"
            peer = min(peers, key=lambda r: r[key]["mean"])
            for r in ours:
                claims.append({
                    "format": fmt, "text": text, "method": r["method"], "kld": r[key],
                    "peer": peer["method"], "peer_kld": peer[key],
                    "vs_peer": verdict(r[key], peer[key], "lmforge", "llama.cpp"),
                    "vs_rtn": None if r is rtn else verdict(r[key], rtn[key], r["method"], "rtn"),
                })
    return claims


def verdict(a: dict, b: dict, name_a: str, name_b: str) -> str:
    """Which of two KL divergence summaries is lower, or "not separated" when the gap is within the spread."""
    if not separated(a, b):
        return "not separated"
    return f"{name_a if a['mean'] < b['mean'] else name_b} lower"


@dataclass
class Prepared:
    """What every formats section shares: the F16 reference, its log-probabilities on each evaluation text (the
    `--kl-divergence-base` files) and the calibration of every seed."""

    f16: Path
    bases: dict[str, Path]
    reference: dict
    calib: dict


def prepare(args, llama: LlamaCpp, loaded, work: Path, imatrix: bool) -> Prepared:
    """The F16 reference, the calibration of every seed, the held-out evaluation texts (sharing no text with any
    seed's calibration windows) and the reference's perplexity and log-probabilities on them."""
    tok = loaded.tokenizer
    f16 = export_gguf(loaded.model, tok, work / "F16.gguf", "f16")
    calib = calibrate(tok, args, list(range(args.seeds)), work)
    used = [c["text"].read_text(encoding="utf-8") for c in calib.values()]
    bases, reference = {}, {"format": "F16", "tool": "lmforge", "method": "export (reference)", "types": describe(f16),
                            "mib": f16.stat().st_size / 2**20}
    n_chars = max(args.chunks, 2) * args.ctx * CHARS_PER_TOKEN  # llama-perplexity wants at least two chunks' tokens
    for text, source in EVAL_SOURCES.items():
        path = work / f"eval-{text}.txt"
        held = held_out_text(evaluation_texts(source), used, n_chars)
        if len(tok.encode(held)) < max(args.chunks, 2) * args.ctx:
            sys.exit(f"the held-out {text} text ({source} outside the calibration) is shorter than {args.chunks} "
                     f"chunks of {args.ctx} tokens: give fewer --chunks or a smaller --ctx")
        path.write_text(held, encoding="utf-8")
        bases[text] = work / f"base-{text}.kld"
        reference[f"ppl_{text}"] = llama.reference(f16, path, bases[text], args.ctx, args.chunks)
        print(f"  F16 reference on {text} ({source}): perplexity {reference[f'ppl_{text}']:.3f}", flush=True)
    if imatrix:
        importance_matrices(llama, f16, calib, args.calib_len, work)
    return Prepared(f16, bases, reference, calib)


def formats_section(rec: Recorder, name: str, args, llama: LlamaCpp, loaded, prep: Prepared, work: Path) -> None:
    """Make, score and time every file of the section's GGUF types; record its formats and claims tables."""
    seeds, texts = sorted(prep.calib), list(prep.bases)
    formats = [f for f in args.formats if f in FORMAT_SECTIONS[name]]
    files, timed = [], {}
    for entry in file_plan(formats, seeds):
        path, made = make_file(entry, loaded, llama, prep.f16, prep.calib, work)
        files.append({**entry, **made, **measure(llama, path, prep.bases, args)})
        if entry["seed"] in (None, seeds[0]):  # a file of another seed has the same types, so the same speed
            timed[len(files) - 1] = path
        else:
            path.unlink()
        f = files[-1]
        print(f"  {entry['format']} {entry['tool']} {entry['method']} seed {entry['seed']}: "
              + ", ".join(f"{t} ppl {f[t]['ppl']:.3f} KLD {f[t]['kld']:.4f}" for t in texts), flush=True)
    tg = decode_speeds(llama, {"reference": prep.f16, **timed}, args)
    for i, path in timed.items():
        files[i]["tg"] = tg[i]
        path.unlink()
    reference = {**prep.reference, "tg_tokens_per_s": spread(tg["reference"])}
    rows = summary_rows(reference, files, texts)
    settings = {
        "ctx": args.ctx, "chunks": args.chunks, "scored": args.chunks * (args.ctx - 1 - args.ctx // 2), "tg": args.tg,
        "bench_repeats": args.bench_repeats, "seeds": args.seeds, "formats": formats, "eval": EVAL_SOURCES,
        "calibration": {"corpus": args.calib, "sequences": args.calib_seqs, "tokens": args.calib_len},
        "same_type_embedding": SAME_EMBEDDING,
    }
    raw = {"reference": {**prep.reference, "tg": tg["reference"]}, "files": files,
           "imatrix_s": {seed: c["imatrix_s"] for seed, c in prep.calib.items()}}
    suffix = name.removeprefix("formats")
    rec.add(name, settings, raw, {f"formats{suffix}": rows, f"claims{suffix}": claim_rows(rows, texts)})


# kernels and speed: lmforge's own packed layers


def kernels_section(rec: Recorder, args) -> None:
    """Microseconds of one-row products, each call on the next of enough weight copies to overflow the caches."""
    rows, raw = [], {}
    for k, n in SMOLLM2_SHAPES[:2] if args.quick else SMOLLM2_SHAPES:
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
            "int8_bf16": lambda i: torch.ops.aten._weight_int8pack_mm(xb, w8[i], onesb),
            "int4_bf16": lambda i: torch.ops.aten._weight_int4pack_mm_for_cpu(xb, w4[i], group, sz.bfloat16()),
            "int8_fp32": lambda i: torch.ops.aten._weight_int8pack_mm(x, w8[i], ones),
            "int4_fp32": lambda i: torch.ops.aten._weight_int4pack_mm_for_cpu(x, w4[i], group, sz),
        }
        row, shape = {"shape": f"{k}x{n}"}, f"{k}x{n}"
        raw[shape] = {}
        for label, fn in variants.items():
            counter = iter(range(10**9))
            us = [t * 1e6 for t in timings(lambda: fn(next(counter) % copies), 10 if label.endswith("_fp32") else 40)]
            raw[shape][label] = us
            row[label] = spread(us)
        rows.append(row)
        print(f"  kernels {shape} done", flush=True)
    rec.add("kernels", {"shapes": [r["shape"] for r in rows]}, raw, {"kernels": rows})


def read_bandwidth() -> float:
    """Bytes per second of summing a 512 MB tensor (what a memory-bound decode step can reach at best)."""
    t = torch.ones(128 << 20)
    return t.numel() * 4 / min(timings(lambda: t.sum(), 5))


def weight_bytes_per_token(model) -> int:
    """Bytes of every matrix a decode step reads (block linears and the head; not the embedding lookup)."""
    total = 0
    for m in model.modules():
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


def speed_section(rec: Recorder, args, loaded) -> None:
    n_new, prompt_len = (32, 128) if args.quick else (128, 128)
    repeats = 1 if args.quick else 5
    tok = loaded.tokenizer
    prompt = tok.encode_documents([d.text for d in read_corpus("pydoc")][:20])[:prompt_len]
    base = loaded.model.eval()
    variants = {"fp32": base, "bf16": copy.deepcopy(base).to(torch.bfloat16)}
    for label, spec in SPEED_WEIGHTS.items():
        variants[label] = copy.deepcopy(base)
        quantize_model(variants[label], spec, progress=False)
    bandwidth = read_bandwidth()
    rows, raw = [], {}
    for label, model in variants.items():
        decode_rate(model, tok, prompt, 8)  # warm-up
        runs = [decode_rate(model, tok, prompt, n_new) for _ in range(repeats)]
        weight_bytes = weight_bytes_per_token(model)
        raw[label] = {"tokens_per_s": [r[0] for r in runs], "prefill_s": [r[1] for r in runs]}
        rows.append({"weights": label, "reference": label == "bf16", "tokens_per_s": spread(raw[label]["tokens_per_s"]),
                     "prefill_s": spread(raw[label]["prefill_s"]), "weight_mib": weight_bytes / 2**20,
                     "bound_tokens_per_s": bandwidth / weight_bytes})
        print(f"  speed {label}: {rows[-1]['tokens_per_s']['median']:.1f} tokens/s", flush=True)
    settings = {"n_new": n_new, "prompt": prompt_len, "repeats": repeats, "read_bandwidth_gb_s": bandwidth / 1e9}
    rec.add("speed", settings, raw, {"speed": rows})


SECTIONS = (*FORMAT_SECTIONS, "kernels", "speed")


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, from {', '.join(SECTIONS)}")
    p.add_argument("--model", default="smollm2-135m",
                   help="a pulled model or a checkpoint (one trained in float has no release grid to find again)")
    p.add_argument("--formats", default="Q8_0,Q4_1,Q4_0,Q4_K_M", help="GGUF types of the formats section")
    p.add_argument("--seeds", type=int, default=3, help="calibration seeds (GPTQ, AWQ, llama-imatrix)")
    p.add_argument("--calib", default=DEFAULT_CALIBRATION, help="calibration set (the library's default)")
    p.add_argument("--calib-seqs", type=int, default=DEFAULT_WINDOWS, help="calibration windows per seed")
    p.add_argument("--calib-len", type=int, default=DEFAULT_WINDOW_LEN, help="tokens per calibration window")
    p.add_argument("--ctx", type=int, default=512, help="llama-perplexity's chunk length (the second half is scored)")
    p.add_argument("--chunks", type=int, default=16, help="llama-perplexity chunks per evaluation text")
    p.add_argument("--tg", type=int, default=128, help="llama-bench's decoded tokens (tgN)")
    p.add_argument("--bench-repeats", type=int, default=5, help="llama-bench rounds over the section's files (one repetition of each per round)")
    p.add_argument("--work", default=None, help="directory for the GGUF files (default: a temporary one)")
    add_bin_argument(p)
    args = p.parse_args()
    if args.quick:
        args.formats, args.seeds, args.calib_seqs, args.calib_len = "Q4_1", 1, 4, 128
        args.chunks, args.tg, args.bench_repeats = 1, 32, 2
    sections, args.formats = args.sections.split(","), args.formats.split(",")
    unknown = set(sections) - set(SECTIONS) or set(args.formats) - {f for fs in FORMAT_SECTIONS.values() for f in fs}
    if unknown:
        sys.exit(f"unknown section or format: {', '.join(sorted(unknown))}")
    if min(args.seeds, args.calib_seqs, args.chunks, args.bench_repeats) < 1 or args.ctx < 8:
        sys.exit("--seeds, --calib-seqs, --chunks and --bench-repeats must be at least 1, --ctx at least 8")
    format_sections = [s for s in FORMAT_SECTIONS if s in sections and set(FORMAT_SECTIONS[s]) & set(args.formats)]
    llama = LlamaCpp(args.llama_bin, ("llama-quantize", "llama-imatrix", "llama-perplexity", "llama-bench")) \
        if format_sections else None
    loaded = load_model(args.model)
    rec = Recorder(args, {"llama.cpp": llama.version} if llama else {})
    if format_sections:
        with tempfile.TemporaryDirectory(prefix="lmforge-quant-", dir=args.work) as work:
            types = {f for name in format_sections for f in FORMAT_SECTIONS[name]} & set(args.formats)
            prep = prepare(args, llama, loaded, Path(work), imatrix=bool(types & set(IMATRIX_TYPES)))
            for name in format_sections:
                formats_section(rec, name, args, llama, loaded, prep, Path(work))
    if "kernels" in sections:
        kernels_section(rec, args)
    if "speed" in sections:
        speed_section(rec, args, loaded)


if __name__ == "__main__":
    main()
