"""Timing requests through lmforge's engine in process, shared by the engine benchmarks."""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from lmforge.serve.engine import LLMEngine
from lmforge.serve.params import SamplingParams


def cache_memory(model, dtype: torch.dtype, seqs: int, tokens: int, block: int = 16) -> int:
    """A kv_cache_memory that holds `seqs` sequences of `tokens` positions."""
    specs = model.cache_specs(dtype, block)
    per_token, per_seq = sum(s.token_bytes() for s in specs), sum(s.sequence_bytes() for s in specs)
    return seqs * (-(-tokens // block) * block * per_token + per_seq)


def timed_batch(engine: LLMEngine, prompts: list[list[int]], params: SamplingParams) -> dict:
    """Submit a request per prompt at once (seed: its index) and step the engine until all are done: per request
    the ms from submission to its first token, the decode ms per token after it and its tokens; the batch's
    output tokens/s from submission to the last token; the first request's text."""
    stamps = {str(i): [] for i in range(len(prompts))}
    ids = {str(i): [] for i in range(len(prompts))}
    text = ""
    start = time.perf_counter()
    for i, prompt in enumerate(prompts):
        engine.add_request(str(i), prompt, replace(params, seed=i))
    while engine.has_unfinished():
        deltas = engine.step()
        now = time.perf_counter()
        for delta in deltas:
            stamps[delta.request_id] += [now] * len(delta.token_ids)
            ids[delta.request_id] += delta.token_ids
            text += delta.text if delta.request_id == "0" else ""
    tokens = [len(s) for s in stamps.values()]
    return {"ttft_ms": [1e3 * (s[0] - start) for s in stamps.values()],
            "ms_per_token": [1e3 * (s[-1] - s[0]) / (len(s) - 1) for s in stamps.values()],
            "tokens": tokens, "tokens_per_s": sum(tokens) / (max(s[-1] for s in stamps.values()) - start),
            "text": text, "token_ids": list(ids.values())}
