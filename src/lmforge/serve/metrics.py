"""Prometheus metrics of the server: requests, queue depth, running sequences, cache use, latencies, drafts."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 60)


class ServerMetrics:
    """One registry per server, so several servers (tests) never share counters."""

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("lmforge_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r)
        self.waiting = Gauge("lmforge_waiting_sequences", "Sequences waiting to be scheduled", registry=r)
        self.running = Gauge("lmforge_running_sequences", "Sequences being generated", registry=r)
        self.blocks_used = Gauge("lmforge_kv_blocks_used", "Cache blocks holding tokens", registry=r)
        self.blocks_total = Gauge("lmforge_kv_blocks_total", "Cache blocks in all", registry=r)
        self.prefix_hit_rate = Gauge("lmforge_prefix_cache_hit_rate", "Prompt tokens found in the prefix cache / asked", registry=r)
        self.prompt_tokens = Counter("lmforge_prompt_tokens", "Prompt tokens received", registry=r)
        self.generation_tokens = Counter("lmforge_generation_tokens", "Tokens generated", registry=r)
        self.ttft = Histogram("lmforge_time_to_first_token_seconds", "Time to first token", buckets=LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram("lmforge_time_per_output_token_seconds", "Time between output tokens",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.draft_tokens = Gauge("lmforge_spec_decode_draft_tokens", "Speculative draft tokens proposed", registry=r)
        self.accepted_tokens = Gauge("lmforge_spec_decode_accepted_tokens", "Speculative draft tokens accepted",
                                     registry=r)

    def observe_engine(self, engine) -> None:
        """Read the engine's gauges (called after each step, on the engine thread)."""
        scheduler, blocks = engine.scheduler, engine.blocks
        self.waiting.set(len(scheduler.waiting))
        self.running.set(len(scheduler.running))
        self.blocks_total.set(blocks.num_blocks)
        self.blocks_used.set(blocks.num_blocks - blocks.num_free_blocks)
        if blocks.prefix_queries:
            self.prefix_hit_rate.set(blocks.prefix_hits / blocks.prefix_queries)
        self.draft_tokens.set(engine.draft_tokens)
        self.accepted_tokens.set(engine.accepted_tokens)


class RequestTimer:
    """Time to first token and time per output token of one request's stream."""

    def __init__(self, metrics: ServerMetrics):
        self.metrics = metrics
        self.start = self.last = time.monotonic()
        self.first = True

    def tokens(self, count: int) -> None:
        now = time.monotonic()
        if self.first:
            self.metrics.ttft.observe(now - self.start)
            self.first = False
        elif count:
            self.metrics.tpot.observe((now - self.last) / count)
        self.last = now
        self.metrics.generation_tokens.inc(count)
