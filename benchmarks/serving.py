"""Serving: lmforge's engine and OpenAI server against llama.cpp and transformers on SmolLM2-135M, 2 threads.

Sections (all by default, or pick with --sections):
  single   one stream, 128 greedy tokens after a 128-token prompt, at bf16 / int8 / int4: lmforge's engine
           (max_num_seqs=1; decode rate from the deltas' timestamps after the first token, prefill rate) vs
           `llama-bench -p 128 -n 128 -t 2` (pp128, tg128) and `llama-server` with one client, on the same
           weights: F16 export for bf16; llama-quantize's Q8_0 of that export for int8; for int4 lmforge's RTN
           with groups of 32 exported as Q4_1 from the same codes, plus llama-quantize's own Q4_1 and Q4_0.
           Also lmforge's time per token split by torch.profiler into matrix products (self time of the
           product ops) and the rest.
  offline  64 prompts of 16-512 tokens of English prose, 128 new tokens each (greedy, ignore EOS): lmforge's
           `LLM.generate` (continuous batching) vs transformers' batched `generate` (bf16, left padding,
           prompts sorted by length, a few batch sizes) vs lmforge's engine one request at a time.
  online   `lmforge serve` (int4, --max-num-seqs 64) and `llama-server -np 16 -c 8192` on the same Q4_1
           file, one after the other, under an async load generator with 1, 4, 16 and 64 concurrent streaming
           clients (128-token completions, temperature 0.8): output tokens/s, time to first token and
           inter-token latency p50/p99.
  prefix   a 1,000-token shared system prompt and 8 short user suffixes in sequence to one engine: time to
           first token of the first request vs the median of the later ones, with prefix caching on and off.
  mixers   small (configs/small.toml) models briefly trained with softmax, mamba2s, a 2mamba/softmax hybrid and sparse
           mixers (max_seq_len 8448): prefill tokens/s of 8 contexts of 1k and of 8k tokens (one timing),
           decode tokens/s at that batch after them, and cache/state memory per sequence (token bytes x
           context + sequence bytes), vs softmax.
  soak     reliability: `lmforge serve` on a tiny random model, 64 concurrent clients for 2 minutes with
           cancellations, streaming and non-streaming requests and bad requests; fails (exit 1) on any 5xx,
           unanswered good request, or blocks / sequences still in use at the end (from /metrics).
  blocks   the cache block size: int4 decode steps at batch 16 over contexts of 256-768 tokens with blocks of
           8, 16, 32 and 64 tokens (recorded apart, in serving-blocks.json, so it can be run on its own).

A run records the sections it ran in benchmarks/results/serving.json (serving.quick.json with --quick),
rewritten after every section; the tables of sections it did not run stay, each with the commit and
date it was measured at. `python benchmarks/render.py` renders BENCHMARKS.md's serving tables from it.
--quick keeps every table with fewer and shorter requests, smaller batches and one repeat (all sections:
about 8 minutes on 2 cores). Needs `lmforge pull smollm2-135m`,
transformers, httpx, and llama.cpp's tools built from the source the llama-cpp-python sdist vendors
(llama-bench, llama-server, llama-quantize; see --llama-bin).

    python benchmarks/serving.py                            # the full recording (about an hour on 2 quiet cores)
    python benchmarks/serving.py --quick --sections soak    # the reliability check at CI size (under a minute)
"""

from __future__ import annotations

from common import THREADS  # first: it pins the thread pools before torch is imported, here and in servers

import asyncio
import copy
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import ClassVar

import httpx
import numpy as np
import torch
from common import parser, print_table
from llamacpp import LlamaCpp, add_bin_argument, embedding_type, tensor_types
from tables import TABLES
from engine_runs import cache_memory
from record import record, spread
from render import cells

from lmforge.checkpoint import load_checkpoint, save_checkpoint
from lmforge.config import load_run_config, run_config_from_dict
from lmforge.data.readers import english_passage, read_corpus
from lmforge.interop.gguf_file import export_gguf
from lmforge.interop.hf import export_hf
from lmforge.interop.load import load_model
from lmforge.model.transformer import Transformer
from lmforge.quant.quantize import QuantSpec, quantize_model
from lmforge.serve.engine import EngineConfig, LLMEngine
from lmforge.serve.llm import LLM, stream
from lmforge.serve.params import SamplingParams
from lmforge.tokenizer import Tokenizer

QUANT = {"int8": QuantSpec("rtn", 8, None), "int4": QuantSpec("rtn", 4, 32)}  # int4 g32: the Q4_1 block
PRODUCT_OPS = {  # matrix products: of the weights (float, int8 and int4 packed) and of attention
    "aten::mm",
    "aten::addmm",
    "aten::_int_mm",
    "aten::_weight_int8pack_mm",
    "aten::_weight_int4pack_mm",
    "aten::_weight_int4pack_mm_for_cpu",
    "aten::bmm",
    "aten::baddbmm",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
}
DTYPE = torch.bfloat16
TITLES = {
    "single": "single stream, greedy, {n_new} tokens after a {prompt} token prompt, {threads} threads",
    "single_split": "lmforge's time per token: matrix products (profiler self time) and the rest",
    "offline": "offline throughput: {prompts} prompts of {min_len}-{max_len} tokens, {n_new} new tokens each",
    "online": "online through the HTTP API: streaming {max_tokens}-token completions at temperature 0.8",
    "prefix": "prefix cache: a {system} token system prompt and {requests} short suffixes in sequence",
    "mixers": "other mixers at batch {batch}: decode after a prefill to the context; cache/state memory per sequence",
    "soak": "reliability: {clients} clients for {seconds} s, cancellations, streaming and not, bad requests",
    "blocks": "cache block size: int4 decode at batch {batch} over contexts of {min_len}-{max_len} tokens",
}


# shared: settings, recording, prompts, models, processes


class Run:
    """The run's settings, raw measurements and summary tables, recorded after every section."""

    def __init__(self, args):
        self.args, self.quick, self.repeats = args, args.quick, args.repeats
        self.records: dict[str, dict] = {}  # area -> its settings, raw measurements and summary tables
        self.versions = {}
        self.work = Path(tempfile.mkdtemp(prefix="lmforge-serving-"))
        self.failed: str | None = None  # why a check (the soak's) failed

    def add(self, section: str, settings: dict, raw, tables: dict[str, list[dict]], area: str = "serving") -> None:
        """Record a section's results in its area (serving, or serving-blocks: a study run on its own)."""
        base = {"threads": THREADS, "quick": self.quick, "repeats": self.repeats, "sections": self.args.sections}
        rec = self.records.setdefault(area, {"settings": base, "raw": {}, "summary": {}})
        rec["settings"][section], rec["raw"][section] = settings, raw
        rec["summary"].update(tables)
        out = self.args.out if area == "serving" else None
        path = record(
            area, rec["settings"], rec["raw"], rec["summary"], out, self.quick, self.versions, keep_others=True
        )
        for name, rows in tables.items():
            spec = TABLES[area][name]
            print(f"\n{TITLES[name].format(**settings, threads=THREADS)}")
            print_table(cells(spec, rows), [(c.header, c.header, "s") for c in spec])
        print(f"(recorded in {path})", flush=True)


def prose_tokens(tok: Tokenizer, count: int) -> list[int]:
    """At least `count` tokens of English prose (the pydoc topics), or all there is."""
    return tok.encode(english_passage(count * 6))


def timed_deltas(engine: LLMEngine, request_id: str, prompt: list[int], params: SamplingParams):
    """(seconds from submission to the first token, timestamps of every delta, the first delta) of one request."""
    stamps, first = [], None
    start = time.perf_counter()
    for delta in stream(engine, request_id, prompt, params):
        stamps.append(time.perf_counter())
        first = first or delta
    return stamps[0] - start, stamps, first


def greedy(n_new: int) -> SamplingParams:
    return SamplingParams(max_tokens=n_new, temperature=0, ignore_eos=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(cmd: list[str], port: int, log: Path, timeout: float = 300):
    """Run a server subprocess until /health answers 200; yield its base URL; stop it (its whole process group)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while not healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                why = (
                    f"exited with {proc.returncode}"
                    if proc.poll() is not None
                    else f"is not healthy after {timeout:.0f} s"
                )
                raise RuntimeError(f"{' '.join(cmd)} {why}:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        stop(proc)


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def lmforge_serve_cmd(model: Path, port: int, *flags: str) -> list[str]:
    return [sys.executable, "-m", "lmforge.cli", "serve", str(model), "--port", str(port), *flags]


class SmolLM2:
    """SmolLM2-135M (the dequantized Q4_1 file) at bf16 / int8 / int4, its GGUF files and checkpoints, made when
    first asked for."""

    FILES: ClassVar[dict[str, str]] = {  # name: how the file is made
        "F16": "lmforge's export",
        "Q8_0": "llama-quantize of the F16 export",
        "Q4_1 same codes": "lmforge's export of the same codes",
        "Q4_1": "llama-quantize of the F16 export",
        "Q4_0": "llama-quantize of the F16 export; another format",
    }
    PEERS: ClassVar[dict[str, tuple[str, ...]]] = {
        "bf16": ("F16",),
        "int8": ("Q8_0",),
        "int4": ("Q4_1 same codes", "Q4_1", "Q4_0"),
    }

    def __init__(self, work: Path, llama_bin: str):
        self.work, self.llama_bin = work, llama_bin
        self._files: dict[str, Path] = {}

    @cached_property
    def loaded(self):
        return load_model("smollm2-135m")

    @property
    def tokenizer(self) -> Tokenizer:
        return self.loaded.tokenizer

    @cached_property
    def llama(self) -> LlamaCpp:
        return LlamaCpp(self.llama_bin, ("llama-bench", "llama-server", "llama-quantize"))

    @cached_property
    def quantized(self) -> dict[str, Transformer]:
        out = {}
        for name, spec in QUANT.items():
            out[name] = copy.deepcopy(self.loaded.model)
            quantize_model(out[name], spec, progress=False)
        return out

    def model(self, weights: str) -> Transformer:
        """A fresh copy (an engine casts its model's float parameters in place)."""
        return copy.deepcopy(self.loaded.model if weights == "bf16" else self.quantized[weights])

    def gguf(self, name: str) -> Path:
        if name not in self._files:
            path = self.work / f"smollm2-{name.replace(' ', '-')}.gguf"
            if name == "F16":
                export_gguf(self.loaded.model, self.tokenizer, path, "f16")
            elif name == "Q4_1 same codes":
                export_gguf(self.quantized["int4"], self.tokenizer, path)
            else:
                self.llama.quantize(self.gguf("F16"), path, name)
            self._files[name] = path
        return self._files[name]

    def label(self, name: str) -> str:
        path = self.gguf(name)
        matrices = "+".join(sorted(set(tensor_types(path)) - {"F32"}))  # F32: the norms
        return f"{matrices} ({self.FILES[name]}; embedding {embedding_type(path)})"

    def checkpoint(self, weights: str) -> Path:
        path = self.work / f"smollm2-{weights}"
        if not path.exists():
            quant = QUANT[weights].to_dict() if weights in QUANT else None
            save_checkpoint(path, self.model(weights), self.loaded.config, self.tokenizer, quantization=quant)
        return path


def fresh_connections(concurrency: int) -> httpx.AsyncClient:
    """A client opening a connection per request: llama-server closes idle kept-alive connections, which a
    client would then reuse and fail on (same for both servers)."""
    return httpx.AsyncClient(
        timeout=1800, limits=httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=0)
    )


async def stream_completion(client: httpx.AsyncClient, url: str, body: dict) -> dict:
    """One streamed /v1/completions request: start, first-token and last-token times, gaps, tokens received."""
    start = time.perf_counter()
    stamps, usage = [], None
    async with client.stream(
        "POST", f"{url}/v1/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}}
    ) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{url} answered {r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            if any(c.get("text") for c in chunk.get("choices") or []):
                stamps.append(time.perf_counter())
    if not stamps:
        raise RuntimeError(f"{url} streamed no tokens")
    tokens = usage["completion_tokens"] if usage else len(stamps)
    return {"start": start, "first": stamps[0], "end": stamps[-1], "tokens": tokens, "gaps": np.diff(stamps).tolist()}


# single


def one_at_a_time(model: Transformer, tok: Tokenizer, max_len: int) -> LLMEngine:
    """The engine serving one sequence at a time, without prefix caching, with cache for `max_len` tokens."""
    config = EngineConfig(max_num_seqs=1, dtype=DTYPE, enable_prefix_caching=False,
                          kv_cache_memory=cache_memory(model, DTYPE, 1, max_len))
    return LLMEngine(model, tok, config)


def lmforge_single(
    model: Transformer, tok: Tokenizer, prompt: list[int], n_new: int, repeats: int, profile_steps: int
) -> list[dict]:
    """Every repeat: decode tokens/s and ms/token from the deltas after the first, prefill tokens/s, and the
    profiled ms per decode step in matrix products."""
    engine = one_at_a_time(model, tok, len(prompt) + n_new + 16)
    timed_deltas(engine, "warmup", prompt, greedy(8))
    runs = []
    for r in range(repeats):
        ttft, stamps, _ = timed_deltas(engine, f"run{r}", prompt, greedy(n_new))
        rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
        runs.append(
            {
                "tokens_per_s": rate,
                "ms_per_token": 1e3 / rate,
                "prefill_tokens_per_s": len(prompt) / ttft,
                "products_ms": profile_products(engine, prompt, profile_steps),
            }
        )
    return runs


def profile_products(engine: LLMEngine, prompt: list[int], steps: int) -> float:
    """Milliseconds per decode step spent in matrix-product ops (their self time), over `steps` steps."""
    from torch.profiler import ProfilerActivity, profile

    engine.add_request("profile", prompt, greedy(steps + 2))
    while not engine.step():  # the prefill, up to the first token
        pass
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            engine.step()
    engine.abort("profile")
    return sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in PRODUCT_OPS) / 1e3 / steps


def server_single(llama: LlamaCpp, gguf: Path, prompt: list[int], n_new: int, repeats: int, log: Path) -> list[dict]:
    """llama-server, one slot, one streaming client: decode tokens/s from the token arrival times, prefill tokens/s."""
    port = free_port()
    body = {"prompt": prompt, "max_tokens": n_new, "temperature": 0, "ignore_eos": True, "cache_prompt": False}

    async def run() -> list[dict]:
        async with fresh_connections(1) as client:
            await stream_completion(client, url, {**body, "max_tokens": 8})
            return [await stream_completion(client, url, body) for _ in range(repeats)]

    with serving(llama.server_cmd(gguf, port, 1, 2048), port, log) as url:
        results = asyncio.run(run())
    return [
        {
            "tokens_per_s": (r["tokens"] - 1) / (r["end"] - r["first"]),
            "prefill_tokens_per_s": len(prompt) / (r["first"] - r["start"]),
        }
        for r in results
    ]


def values(runs: list[dict], key: str) -> dict:
    return spread([r[key] for r in runs])


def single(run: Run, smol: SmolLM2) -> None:
    n_new, n_prompt = (32, 128) if run.quick else (128, 128)
    steps = 4 if run.quick else 16
    tok = smol.tokenizer
    prompt = prose_tokens(tok, n_prompt)[:n_prompt]
    run.versions["llama.cpp"] = smol.llama.version
    raw, rows, split = {}, [], []
    for weights in run.args.weights:
        ours = lmforge_single(smol.model(weights), tok, prompt, n_new, run.repeats, steps)
        raw[weights] = {"lmforge": ours}
        print(f"  {weights}: lmforge {statistics.median(r['tokens_per_s'] for r in ours):.1f} tokens/s", flush=True)
        split.append(
            {
                "weights": weights,
                "ms_per_token": values(ours, "ms_per_token"),
                "products_ms": values(ours, "products_ms"),
                "rest_ms": spread([r["ms_per_token"] - r["products_ms"] for r in ours]),
            }
        )
        for name in smol.PEERS[weights]:
            path = smol.gguf(name)
            bench = smol.llama.bench(path, n_prompt, n_new, run.repeats)
            server = server_single(smol.llama, path, prompt, n_new, run.repeats, run.work / f"llama-server-{name}.log")
            raw[weights][name] = {"file": smol.label(name), "llama_bench": bench, "llama_server": server}
            rows.append(
                {
                    "weights": weights,
                    "peer": smol.label(name),
                    "lmforge_tokens_per_s": values(ours, "tokens_per_s"),
                    "lmforge_ms_per_token": values(ours, "ms_per_token"),
                    "lmforge_prefill_tokens_per_s": values(ours, "prefill_tokens_per_s"),
                    "bench_tg_tokens_per_s": spread(bench["tg"]),
                    "bench_pp_tokens_per_s": spread(bench["pp"]),
                    "server_tokens_per_s": values(server, "tokens_per_s"),
                }
            )
            print(
                f"  {weights} vs {name}: llama-bench tg {statistics.median(bench['tg']):.1f}, "
                f"llama-server {statistics.median(r['tokens_per_s'] for r in server):.1f} tokens/s",
                flush=True,
            )
    settings = {
        "n_new": n_new,
        "prompt": n_prompt,
        "profile_steps": steps,
        "weights": run.args.weights,
        "quantization": {k: v.to_dict() for k, v in QUANT.items()},
    }
    run.add("single", settings, raw, {"single": rows, "single_split": split})


# offline


def offline_prompts(tok: Tokenizer, count: int, low: int, high: int, seed: int = 0) -> list[list[int]]:
    """`count` windows of prose, lengths drawn uniformly from [low, high], at random places."""
    text = prose_tokens(tok, 16 * high)
    rng = random.Random(seed)
    prompts = []
    for _ in range(count):
        n = rng.randint(low, high)
        at = rng.randrange(len(text) - n)
        prompts.append(text[at : at + n])
    return prompts


def lmforge_batched(
    model: Transformer, tok: Tokenizer, prompts: list[list[int]], n_new: int, repeats: int
) -> list[float]:
    """Seconds of `LLM.generate` over every prompt at once, per repeat."""
    longest = max(map(len, prompts)) + n_new
    llm = LLM(
        model,
        tok,
        EngineConfig(
            max_num_seqs=len(prompts),
            dtype=DTYPE,
            enable_prefix_caching=False,
            kv_cache_memory=cache_memory(model, DTYPE, len(prompts), longest),
        ),
    )
    llm.generate(prompts[:4], greedy(4))
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        outputs = llm.generate(prompts, greedy(n_new))
        seconds.append(time.perf_counter() - start)
        assert all(len(o.outputs[0].token_ids) == n_new for o in outputs)
    return seconds


def lmforge_sequential(
    model: Transformer, tok: Tokenizer, prompts: list[list[int]], n_new: int, repeats: int
) -> list[float]:
    """Seconds of the engine run one request at a time (the old loop's behaviour) over `prompts`, per repeat."""
    engine = one_at_a_time(model, tok, max(map(len, prompts)) + n_new)
    timed_deltas(engine, "warmup", prompts[0], greedy(4))
    seconds = []
    for r in range(repeats):
        start = time.perf_counter()
        for i, prompt in enumerate(prompts):
            timed_deltas(engine, f"{r}-{i}", prompt, greedy(n_new))
        seconds.append(time.perf_counter() - start)
    return seconds


def transformers_batched(
    hf, pad_id: int, prompts: list[list[int]], n_new: int, batch: int, repeats: int
) -> list[float]:
    """Seconds of transformers' `generate` over the prompts sorted by length, `batch` at a time, left padded."""
    ordered = sorted(prompts, key=len)
    batches = [ordered[i : i + batch] for i in range(0, len(ordered), batch)]

    def generate(group: list[list[int]], new: int) -> None:
        width = max(map(len, group))
        ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in group])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in group])
        with torch.no_grad():
            out = hf.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                pad_token_id=pad_id,
            )
        assert out.shape[1] == width + new

    generate(batches[0][:2], 4)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for group in batches:
            generate(group, n_new)
        seconds.append(time.perf_counter() - start)
    return seconds


def offline(run: Run, smol: SmolLM2) -> None:
    from transformers import AutoModelForCausalLM

    count, low, high, n_new = (16, 16, 256, 32) if run.quick else (64, 16, 512, 128)
    hf_batches = (16,) if run.quick else (16, 32, 64)
    tok = smol.tokenizer
    prompts = offline_prompts(tok, count, low, high)
    sequential = prompts[::4]
    tokens = count * n_new
    raw, rows = {}, []
    for weights in run.args.weights:
        raw[f"lmforge {weights}"] = secs = lmforge_batched(smol.model(weights), tok, prompts, n_new, run.repeats)
        rows.append(
            {
                "engine": "lmforge LLM.generate (continuous batching)",
                "weights": weights,
                "requests": count,
                "tokens_per_s": spread([tokens / s for s in secs]),
            }
        )
        print(f"  lmforge {weights}: {tokens / statistics.median(secs):.0f} tokens/s", flush=True)
    raw["lmforge bf16 one at a time"] = secs = lmforge_sequential(
        smol.model("bf16"), tok, sequential, n_new, run.repeats
    )
    rows.append(
        {
            "engine": "lmforge engine, one request at a time",
            "weights": "bf16",
            "requests": len(sequential),
            "tokens_per_s": spread([len(sequential) * n_new / s for s in secs]),
            "sequential": True,
        }
    )
    hf_dir = export_hf(smol.loaded.model, tok, run.work / "smollm2-hf")
    hf = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.bfloat16).eval()
    peer_rows = []
    for batch in hf_batches:
        raw[f"transformers batch {batch}"] = secs = transformers_batched(
            hf, tok.pad_id, prompts, n_new, batch, run.repeats
        )
        peer_rows.append(
            {
                "engine": f"transformers generate, batch {batch} (by length, left padding)",
                "weights": "bf16",
                "requests": count,
                "tokens_per_s": spread([tokens / s for s in secs]),
            }
        )
        print(f"  transformers batch {batch}: {tokens / statistics.median(secs):.0f} tokens/s", flush=True)
    max(peer_rows, key=lambda r: r["tokens_per_s"]["median"])["transformers_best"] = True
    settings = {
        "prompts": count,
        "min_len": low,
        "max_len": high,
        "n_new": n_new,
        "prompt_lengths": [len(p) for p in prompts],
        "sequential_prompts": len(sequential),
        "transformers_batches": list(hf_batches),
    }
    run.add("offline", settings, raw, {"offline": rows + peer_rows})


# online


async def load_level(url: str, prompts: list[list[int]], concurrency: int, requests: int, max_tokens: int) -> dict:
    """`requests` streaming completions, `concurrency` at a time: aggregate tokens/s, TTFT and ITL percentiles (ms)."""
    todo = list(range(requests))
    results = []

    async def client_loop(client: httpx.AsyncClient) -> None:
        while todo:
            i = todo.pop()
            body = {
                "prompt": prompts[i % len(prompts)],
                "max_tokens": max_tokens,
                "temperature": 0.8,
                "seed": i,
                "ignore_eos": True,
            }
            results.append(await stream_completion(client, url, body))

    async with fresh_connections(concurrency) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
    ttft = [1e3 * (r["first"] - r["start"]) for r in results]
    gaps = [1e3 * g for r in results for g in r["gaps"]]
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    return {
        "requests": requests,
        "tokens": sum(r["tokens"] for r in results),
        "seconds": wall,
        "tokens_per_s": sum(r["tokens"] for r in results) / wall,
        "ttft_p50_ms": float(np.percentile(ttft, 50)),
        "ttft_p99_ms": float(np.percentile(ttft, 99)),
        "itl_p50_ms": float(np.percentile(gaps, 50)),
        "itl_p99_ms": float(np.percentile(gaps, 99)),
    }


def load_levels(
    name: str,
    url: str,
    prompts: list[list[int]],
    levels: tuple[int, ...],
    per_level: int,
    max_tokens: int,
    repeats: int,
) -> dict[int, list[dict]]:
    async def run() -> dict[int, list[dict]]:
        await load_level(url, prompts, 2, 2, 8)  # warm-up
        out = {}
        for c in levels:
            out[c] = [await load_level(url, prompts, c, max(per_level * c, 2), max_tokens) for _ in range(repeats)]
            print(
                f"  {name} concurrency {c}: {statistics.median(r['tokens_per_s'] for r in out[c]):.1f} tokens/s",
                flush=True,
            )
        return out

    return asyncio.run(run())


def online(run: Run, smol: SmolLM2) -> None:
    levels = (1, 4, 16, 64)
    per_level, max_tokens = (1, 32) if run.quick else (2, 128)
    tok = smol.tokenizer
    text = prose_tokens(tok, 16 * 100)
    prompts = [text[i * 100 : i * 100 + 64 + (i * 7) % 64] for i in range(16)]  # 16 fixed prompts of 64-127 tokens
    run.versions["llama.cpp"] = smol.llama.version
    lmforge_flags = ("--max-num-seqs", "64", "--kv-cache-memory", "1GiB")
    servers = {  # name: command for a port
        "lmforge serve": lambda port: lmforge_serve_cmd(smol.checkpoint("int4"), port, *lmforge_flags),
        "llama-server": lambda port: smol.llama.server_cmd(smol.gguf("Q4_1 same codes"), port, 16, 8192),
    }
    raw, rows, commands = {}, [], {}
    for name, command in servers.items():
        port = free_port()
        commands[name] = command(port)
        with serving(commands[name], port, run.work / f"online-{name.replace(' ', '-')}.log") as url:
            raw[name] = measured = load_levels(name, url, prompts, levels, per_level, max_tokens, run.repeats)
        for c, reps in measured.items():
            rows.append(
                {
                    "server": name,
                    "concurrency": c,
                    "requests": reps[0]["requests"],
                    **{
                        k: values(reps, k)
                        for k in ("tokens_per_s", "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms")
                    },
                }
            )
    rows.sort(key=lambda r: (r["concurrency"], r["server"] != "lmforge serve"))
    settings = {
        "levels": list(levels),
        "requests_per_level": f"{per_level} x concurrency",
        "max_tokens": max_tokens,
        "prompt_lengths": [len(p) for p in prompts],
        "weights": smol.label("Q4_1 same codes"),
        "commands": {name: " ".join(Path(c).name for c in cmd) for name, cmd in commands.items()},
    }
    run.add("online", settings, raw, {"online": rows})


# prefix


def prefix_run(model: Transformer, tok: Tokenizer, system: list[int], suffixes: list[list[int]], caching: bool) -> dict:
    """TTFT (ms) of each request of `suffixes` after the shared `system` prompt, in sequence, on a fresh engine."""
    longest = len(system) + max(map(len, suffixes)) + 2
    engine = LLMEngine(
        model,
        tok,
        EngineConfig(
            max_num_seqs=len(suffixes),
            dtype=DTYPE,
            enable_prefix_caching=caching,
            kv_cache_memory=cache_memory(model, DTYPE, len(suffixes) + 1, longest),
        ),
    )
    timed_deltas(engine, "warmup", list(reversed(system)), greedy(1))  # the same shapes, other tokens
    ttfts, cached = [], []
    for i, suffix in enumerate(suffixes):
        ttft, _, first = timed_deltas(engine, str(i), system + suffix, greedy(1))
        ttfts.append(1e3 * ttft)
        cached.append(first.num_cached_tokens)
    return {"ttft_ms": ttfts, "cached_tokens": cached}


def prefix(run: Run, smol: SmolLM2) -> None:
    n_system, n_requests, weights = 1000, (4 if run.quick else 8), "int4"
    tok = smol.tokenizer
    system = prose_tokens(tok, n_system)[:n_system]
    suffixes = [
        tok.encode(f"\n\nQuestion {i + 1}: what does paragraph {i + 1} above say about {topic}?")
        for i, topic in enumerate(["errors", "classes", "modules", "loops", "numbers", "strings", "files", "names"])
    ]
    raw, rows = {}, []
    for caching in (True, False):
        reps = [
            prefix_run(smol.model(weights), tok, system, suffixes[:n_requests], caching) for _ in range(run.repeats)
        ]
        raw["on" if caching else "off"] = reps
        rows.append(
            {
                "prefix_caching": "on" if caching else "off",
                "cached_tokens": int(statistics.median(c for r in reps for c in r["cached_tokens"][1:])),
                "first_ttft_ms": spread([r["ttft_ms"][0] for r in reps]),
                "later_ttft_ms": spread([statistics.median(r["ttft_ms"][1:]) for r in reps]),
            }
        )
        print(
            f"  prefix caching {'on' if caching else 'off'}: first {rows[-1]['first_ttft_ms']['median']:.0f} ms, "
            f"later {rows[-1]['later_ttft_ms']['median']:.0f} ms",
            flush=True,
        )
    run.add(
        "prefix",
        {
            "system": n_system,
            "requests": n_requests,
            "weights": weights,
            "suffix_lengths": [len(s) for s in suffixes[:n_requests]],
        },
        raw,
        {"prefix": rows},
    )


# mixers


MIXERS = {
    "softmax": ["softmax"],
    "mamba2s": ["mamba2s"],
    "hybrid 2mamba x3 + softmax": ["2mamba", "2mamba", "2mamba", "softmax"],
    "sparse": ["sparse"],
}
CONTEXTS = {"1k": 1024, "8k": 8192}
MAX_SEQ_LEN = 8448


def train_mixer(name: str, mixers: list[str], work: Path, steps: int, quick: bool):
    """A small (configs/small.toml) model with `mixers`, trained `steps` steps on stdlib (long enough to be a real checkpoint)."""
    from lmforge.data.prepare import prepare_or_load
    from lmforge.train.trainer import train

    data_dir = Path("runs/benchmark-data")
    prepare_or_load(load_run_config("small").data, data_dir, progress=False)
    overrides = [
        f"model.mixers=[{','.join(mixers)}]",
        "model.mamba2_expand=1",
        f"model.max_seq_len={MAX_SEQ_LEN}",
        f"train.steps={steps}",
        "train.compile=false",
        f"train.out={work / name.replace(' ', '_')}",
        f"data.dir={data_dir}",
        f"train.eval_every={steps}",
        "train.eval_tokens=4096",
        f"train.warmup_steps={max(steps // 10, 1)}",
    ]
    if quick:
        overrides += ["train.batch_size=4", "train.seq_len=128"]
    result = train(load_run_config("small", overrides), overwrite=True, progress=False, log=lambda s: None)
    return load_checkpoint(result.out), result.params


def decode_after_prefill(
    model: Transformer, tok: Tokenizer, prompts: list[list[int]], n_new: int, windows: int
) -> dict:
    """Prefill every prompt (chunks of 2,048 tokens a step), then `windows` x `n_new` decode steps of the whole
    batch; tokens/s of every window. Sequences whose prefill ended first decode meanwhile, so each may
    generate up to a prefill's steps more than the windows need; they are aborted at the end."""
    batch, chunk = len(prompts), 2048
    spare = -(-batch * len(prompts[0]) // chunk) + 1
    new = windows * n_new + spare
    engine = LLMEngine(
        model,
        tok,
        EngineConfig(
            max_num_seqs=batch,
            max_num_batched_tokens=chunk,
            dtype=DTYPE,
            enable_prefix_caching=False,
            kv_cache_memory=cache_memory(model, DTYPE, batch, len(prompts[0]) + new),
        ),
    )
    for i, prompt in enumerate(prompts):
        engine.add_request(str(i), prompt, greedy(new))
    start, started = time.perf_counter(), set()
    while len(started) < batch:
        started.update(d.request_id for d in engine.step())
    prefill = time.perf_counter() - start
    rates = []
    for _ in range(windows):
        start, tokens = time.perf_counter(), 0
        for _ in range(n_new):
            tokens += sum(len(d.token_ids) for d in engine.step())
        rates.append(tokens / (time.perf_counter() - start))
    for i in range(batch):
        engine.abort(str(i))
    return {"prefill_s": prefill, "tokens_per_s": rates}


def memory_per_sequence(model: Transformer, context: int) -> float:
    """MiB the engine keeps for one sequence at `context` tokens: per-token cache x context + per-sequence state."""
    specs = model.cache_specs(DTYPE, 16)
    return (sum(s.token_bytes() for s in specs) * context + sum(s.sequence_bytes() for s in specs)) / 2**20


def mixers(run: Run, smol: SmolLM2) -> None:
    steps, batch, n_new = (3, 2, 8) if run.quick else (30, 8, 32)
    windows = run.repeats
    stdlib = "\n".join(d.text for _, d in zip(range(400), read_corpus("stdlib")))
    raw, rows = {}, []
    for name, layers in MIXERS.items():
        loaded, params = train_mixer(name, layers, run.work, steps, run.quick)
        ids = loaded.tokenizer.encode(stdlib)
        row, raw[name] = {"mixer": name, "params": params, "softmax": name == "softmax"}, {}
        for label, context in CONTEXTS.items():
            prompts = [ids[i * context // 2 : i * context // 2 + context] for i in range(batch)]
            assert all(len(p) == context for p in prompts), "not enough stdlib text for the contexts"
            raw[name][label] = result = decode_after_prefill(loaded.model, loaded.tokenizer, prompts, n_new, windows)
            row[f"decode_{label}"] = spread(result["tokens_per_s"])
            row[f"prefill_{label}"] = batch * context / result["prefill_s"]
            row[f"memory_{label}_mib"] = memory_per_sequence(loaded.model, context)
            print(
                f"  {name} @{label}: prefill {result['prefill_s']:.1f} s, decode "
                f"{statistics.median(result['tokens_per_s']):.0f} tokens/s",
                flush=True,
            )
        rows.append(row)
    run.add(
        "mixers",
        {
            "batch": batch,
            "n_new": n_new,
            "train_steps": steps,
            "contexts": CONTEXTS,
            "max_seq_len": MAX_SEQ_LEN,
            "mixers": MIXERS,
            "decode_windows": windows,
        },
        raw,
        {"mixers": rows},
    )


# soak


CHATML = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SOAK_CONTEXT, SOAK_CACHE_TOKENS = 16384, 8192


def tiny_checkpoint(path: Path) -> tuple[Path, int]:
    """A random 2-layer model with a 512-token BPE trained on a little stdlib and a chat template, and the bytes
    of fp32 cache that hold SOAK_CACHE_TOKENS of it."""
    texts = [d.text for _, d in zip(range(40), read_corpus("stdlib"))]
    hf = Tokenizer.train(texts, vocab_size=512).hf
    hf.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    tok = Tokenizer(hf, chat_template=CHATML)
    cfg = run_config_from_dict(
        {
            "model": {
                "vocab_size": tok.vocab_size,
                "d_model": 64,
                "n_layers": 2,
                "n_heads": 4,
                "n_kv_heads": 2,
                "max_seq_len": SOAK_CONTEXT,
            }
        }
    )
    torch.manual_seed(0)
    model = Transformer(cfg.model)
    token_bytes = sum(s.token_bytes() for s in model.cache_specs(torch.float32, 16))
    return save_checkpoint(path, model, cfg, tok), SOAK_CACHE_TOKENS * token_bytes


def bad_requests() -> list[tuple[str, str, dict, int]]:
    """(what, endpoint, body, expected status) of requests the server must refuse."""
    return [
        ("max_tokens < 0", "/v1/completions", {"prompt": "def f", "max_tokens": -1}, 400),
        ("n = 0", "/v1/completions", {"prompt": "def f", "n": 0}, 400),
        ("logprobs = 50", "/v1/completions", {"prompt": "def f", "logprobs": 50}, 400),
        ("temperature not a number", "/v1/completions", {"prompt": "def f", "temperature": "hot"}, 400),
        ("token id outside the vocabulary", "/v1/completions", {"prompt": [10**6]}, 400),
        ("prompt longer than the context", "/v1/completions", {"prompt": [5] * (SOAK_CONTEXT + 10)}, 400),
        ("prompt larger than the whole cache", "/v1/completions", {"prompt": [5] * (SOAK_CACHE_TOKENS + 100)}, 400),
        ("no messages", "/v1/chat/completions", {"messages": []}, 400),
        ("unknown model", "/v1/completions", {"model": "nope", "prompt": "def f"}, 404),
    ]


def good_request(rng: random.Random, words: list[str]) -> tuple[str, dict, int]:
    """(endpoint, body, choices expected) of a random valid request: completion or chat, n 1 or 2, streamed or not."""
    params = {
        "max_tokens": rng.randint(1, 64),
        "temperature": rng.choice([0, 0.7, 1.0]),
        "seed": rng.randrange(10**6),
        "stream": rng.random() < 0.5,
    }
    text = " ".join(rng.choices(words, k=rng.randint(3, 120)))
    if rng.random() < 0.25:
        return "/v1/chat/completions", {"messages": [{"role": "user", "content": text}], **params}, 1
    n = 2 if rng.random() < 0.1 else 1
    return "/v1/completions", {"prompt": text, "n": n, **params}, n


async def soak_good(
    client: httpx.AsyncClient, url: str, body: dict, choices: int, cancel_after: int | None
) -> tuple[str, int]:
    """Outcome of a valid request (answered / cancelled / 5xx / unanswered) and the tokens it received."""
    if not body["stream"]:
        try:
            r = await asyncio.wait_for(client.post(url, json=body), None if cancel_after is None else cancel_after / 50)
        except asyncio.TimeoutError:
            return "cancelled", 0
        if r.status_code != 200:
            return ("5xx" if r.status_code >= 500 else f"status {r.status_code}"), 0
        answer = r.json()
        done = len([c for c in answer["choices"] if c["finish_reason"]]) == choices
        return ("answered" if done else "unanswered"), answer["usage"]["completion_tokens"]
    finished, chunks = set(), 0
    async with client.stream("POST", url, json=body) as r:
        if r.status_code != 200:
            return ("5xx" if r.status_code >= 500 else f"status {r.status_code}"), 0
        async for line in r.aiter_lines():
            if line == "data: [DONE]":
                return ("answered" if len(finished) == choices else "unanswered"), chunks
            if not line.startswith("data: "):
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                return "5xx", chunks
            finished.update(c["index"] for c in chunk["choices"] if c.get("finish_reason"))
            chunks += 1
            if cancel_after is not None and chunks >= cancel_after:
                return "cancelled", chunks  # leaving the block closes the connection mid-stream
    return "unanswered", chunks


async def soak_client(base: str, rng: random.Random, deadline: float, words: list[str], log: list[dict]) -> None:
    bad = bad_requests()
    async with httpx.AsyncClient(timeout=120) as client:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            if rng.random() < 0.1:
                what, path, body, expected = rng.choice(bad)
                r = await client.post(base + path, json=body)
                outcome = (
                    "refused"
                    if r.status_code == expected
                    else ("5xx" if r.status_code >= 500 else f"bad got {r.status_code}")
                )
                log.append({"kind": what, "outcome": outcome, "tokens": 0, "seconds": time.perf_counter() - started})
                continue
            path, body, choices = good_request(rng, words)
            cancel_after = rng.randint(1, 40) if rng.random() < 0.2 else None
            try:
                outcome, tokens = await soak_good(client, base + path, body, choices, cancel_after)
            except httpx.HTTPError as e:
                outcome, tokens = f"unanswered ({type(e).__name__})", 0
            kind = ("chat" if "chat" in path else "completion") + (" stream" if body["stream"] else "")
            log.append({"kind": kind, "outcome": outcome, "tokens": tokens, "seconds": time.perf_counter() - started})


def gauges(base: str) -> dict[str, float]:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    names = ("lmforge_kv_blocks_used", "lmforge_running_sequences", "lmforge_waiting_sequences")
    return {n: float(re.search(rf"^{n} (\S+)$", text, re.MULTILINE).group(1)) for n in names}


def settle(base: str, seconds: float = 15) -> dict[str, float]:
    """The gauges once nothing is in use (or as they are after `seconds`: aborts take a disconnect poll to land)."""
    deadline = time.monotonic() + seconds
    while any((g := gauges(base)).values()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return g


def soak_summary(log: list[dict], wall: float, end: dict[str, float]) -> tuple[dict, dict, dict]:
    """The soak's table row, outcomes and latency percentiles by kind of request, and the failed outcomes."""
    outcomes = Counter(e["outcome"] for e in log)
    failures = {k: v for k, v in outcomes.items() if k not in ("answered", "cancelled", "refused")}
    row = {
        "seconds": wall,
        "requests": len(log),
        "answered": outcomes["answered"],
        "cancelled": outcomes["cancelled"],
        "refused_as_expected": outcomes["refused"],
        "server_errors": outcomes["5xx"],
        "unanswered": sum(failures.values()) - outcomes["5xx"],
        "blocks_used_end": end["lmforge_kv_blocks_used"],
        "running_end": end["lmforge_running_sequences"],
        "tokens_per_s": sum(e["tokens"] for e in log) / wall,
        "passed": not failures and not any(end.values()),
    }
    by_kind = {}
    for kind in sorted({e["kind"] for e in log}):
        entries = [e for e in log if e["kind"] == kind]
        seconds = [e["seconds"] for e in entries]
        by_kind[kind] = {
            "outcomes": dict(Counter(e["outcome"] for e in entries)),
            "p50_s": float(np.percentile(seconds, 50)),
            "p99_s": float(np.percentile(seconds, 99)),
        }
    return row, by_kind, failures


def soak(run: Run, smol: SmolLM2) -> None:
    clients, seconds = 64, (30 if run.quick else 120)
    ckpt, cache = tiny_checkpoint(run.work / "tiny")
    words = next(read_corpus("stdlib")).text.split()[:2000]
    port = free_port()
    cmd = lmforge_serve_cmd(ckpt, port, "--max-num-seqs", "64", "--dtype", "fp32", "--kv-cache-memory", str(cache))
    log: list[dict] = []
    with serving(cmd, port, run.work / "soak.log") as base:
        start = time.perf_counter()
        deadline = time.monotonic() + seconds

        async def all_clients() -> None:
            await asyncio.gather(*(soak_client(base, random.Random(i), deadline, words, log) for i in range(clients)))

        asyncio.run(all_clients())
        wall = time.perf_counter() - start
        end = settle(base)
    row, by_kind, failures = soak_summary(log, wall, end)
    row["clients"] = clients
    for kind, summary in by_kind.items():
        print(f"  {kind}: {summary['outcomes']}, p50 {summary['p50_s']:.2f} s, p99 {summary['p99_s']:.2f} s")
    run.add(
        "soak",
        {
            "clients": clients,
            "seconds": seconds,
            "context": SOAK_CONTEXT,
            "cache_tokens": SOAK_CACHE_TOKENS,
            "server_flags": cmd[5:],
        },
        {"by_kind": by_kind, "end_gauges": end},
        {"soak": [row]},
    )
    if not row["passed"]:
        run.failed = (
            f"soak failed: outcomes {dict(failures)}, gauges at the end {end}; server log {run.work / 'soak.log'}"
        )


# block size


BLOCK_SIZES = (8, 16, 32, 64)


def block_size_run(model: Transformer, tok: Tokenizer, prompts: list[list[int]], block: int, steps: int) -> float:
    """Median milliseconds of a decode step with every prompt running, in an engine with `block`-token blocks."""
    engine = LLMEngine(model, tok, EngineConfig(max_num_seqs=len(prompts), block_size=block))
    for i, prompt in enumerate(prompts):
        params = SamplingParams(max_tokens=steps + 8, temperature=0.8, ignore_eos=True, seed=i)
        engine.add_request(str(i), prompt, params)
    while any(s.num_output_tokens == 0 for r in engine.requests.values() for s in r.seqs):
        engine.step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        engine.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def blocks(run: Run, smol: SmolLM2) -> None:
    """Decode speed by cache block size (smaller blocks waste less of a sequence's last block and share
    prefixes more finely; larger ones mean fewer, longer copies per gathered sequence)."""
    batch, steps, low, high = (4, 8, 128, 256) if run.quick else (16, 32, 256, 768)
    tok = smol.tokenizer
    prompts = offline_prompts(tok, batch, low, high, seed=3)
    raw, rows = {}, []
    for block in BLOCK_SIZES:
        reps = [block_size_run(smol.model("int4"), tok, prompts, block, steps) for _ in range(run.repeats)]
        raw[str(block)] = reps
        ms = spread(reps)
        rows.append({"block_size": block, "ms_per_step": ms, "tokens_per_s": spread([batch * 1e3 / r for r in reps])})
        print(f"  block {block}: {ms['median']:.1f} ms per step", flush=True)
    default = next(r for r in rows if r["block_size"] == EngineConfig.block_size)
    for row in rows:  # a ranking only where the repeats' ranges do not overlap
        ms, base = row["ms_per_step"], default["ms_per_step"]
        row["vs_default"] = (
            "faster" if ms["max"] < base["min"] else "slower" if ms["min"] > base["max"] else "within the spread"
        )
    run.add("blocks", {"batch": batch, "steps": steps, "min_len": low, "max_len": high, "weights": "int4"}, raw,
            {"blocks": rows}, area="serving-blocks")


SECTION_RUNS = {
    "single": single,
    "offline": offline,
    "online": online,
    "prefix": prefix,
    "mixers": mixers,
    "soak": soak,
    "blocks": blocks,
}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument(
        "--sections", default=",".join(SECTION_RUNS), help=f"comma-separated, from {', '.join(SECTION_RUNS)}"
    )
    p.add_argument("--weights", default="bf16,int8,int4", help="SmolLM2 weights for single and offline")
    p.add_argument("--repeats", type=int, default=None, help="repeats of every timing (default 3, 1 with --quick)")
    add_bin_argument(p)
    args = p.parse_args()
    args.repeats = args.repeats or (1 if args.quick else 3)
    if args.repeats < 1:
        sys.exit("--repeats must be at least 1")
    args.weights = args.weights.split(",")
    sections = args.sections.split(",")
    unknown = set(sections) - set(SECTION_RUNS) or set(args.weights) - {"bf16", "int8", "int4"}
    if unknown:
        sys.exit(f"unknown section or weights: {', '.join(sorted(unknown))}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out, as on Ctrl-C
    run = Run(args)
    smol = SmolLM2(run.work, args.llama_bin)
    try:
        for name, section in SECTION_RUNS.items():
            if name in sections:
                print(f"\n== {name}", flush=True)
                section(run, smol)
    finally:
        if not run.failed:  # else the work directory stays, for the server's log
            shutil.rmtree(run.work)
    if run.failed:
        sys.exit(run.failed)


if __name__ == "__main__":
    main()
