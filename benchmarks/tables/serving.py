"""BENCHMARKS.md's serving tables (benchmarks/serving.py's records)."""

from columns import Column, Ratio, marked

def _peer_at_same_concurrency(row: dict, other: dict) -> bool:
    return other["server"] == "llama-server" and other["concurrency"] == row["concurrency"]


TABLES = {
    "single": (
        Column("weights", "weights"),
        Column("llama.cpp file", "peer"),
        Column("lmforge tok/s", "lmforge_tokens_per_s", ".1f"),
        Column("lmforge ms/token", "lmforge_ms_per_token", ".1f"),
        Column("llama-bench tg tok/s", "bench_tg_tokens_per_s", ".1f"),
        Ratio("lmforge / llama-bench", "lmforge_tokens_per_s", "bench_tg_tokens_per_s"),
        Column("llama-server tok/s", "server_tokens_per_s", ".1f"),
        Ratio("lmforge / llama-server", "lmforge_tokens_per_s", "server_tokens_per_s"),
        Column("lmforge prefill tok/s", "lmforge_prefill_tokens_per_s", ".0f"),
        Column("llama-bench pp tok/s", "bench_pp_tokens_per_s", ".0f"),
        Ratio("prefill ratio", "lmforge_prefill_tokens_per_s", "bench_pp_tokens_per_s"),
    ),
    "single_split": (
        Column("weights", "weights"),
        Column("ms/token", "ms_per_token", ".1f"),
        Column("matrix products ms (weights, attention)", "products_ms", ".1f"),
        Column("rest ms", "rest_ms", ".1f"),
        Ratio("products share", "products_ms", "ms_per_token", fmt=".0%"),
    ),
    "offline": (
        Column("engine", "engine"),
        Column("weights", "weights"),
        Column("requests", "requests", "d"),
        Column("output tok/s", "tokens_per_s", ",.0f"),
        Ratio("vs transformers (best batch)", "tokens_per_s", "tokens_per_s", marked("transformers_best")),
        Ratio("vs one at a time (bf16)", "tokens_per_s", "tokens_per_s", marked("sequential")),
    ),
    "online": (
        Column("concurrency", "concurrency", "d"),
        Column("server", "server"),
        Column("requests", "requests", "d"),
        Column("output tok/s", "tokens_per_s", ".1f"),
        Ratio("vs llama-server", "tokens_per_s", "tokens_per_s", _peer_at_same_concurrency),
        Column("TTFT p50 ms", "ttft_p50_ms", ",.0f"),
        Column("TTFT p99 ms", "ttft_p99_ms", ",.0f"),
        Column("ITL p50 ms", "itl_p50_ms", ".1f"),
        Column("ITL p99 ms", "itl_p99_ms", ".1f"),
    ),
    "prefix": (
        Column("prefix caching", "prefix_caching"),
        Column("cached tokens (later)", "cached_tokens", "d"),
        Column("first TTFT ms", "first_ttft_ms", ",.0f"),
        Column("later TTFT ms (median)", "later_ttft_ms", ",.0f"),
        Ratio("later / first", "later_ttft_ms", "first_ttft_ms"),
    ),
    "mixers": (
        Column("mixers", "mixer"),
        Column("parameters", "params", ",d"),
        Column("prefill tok/s @1k", "prefill_1k", ",.0f"),
        Column("prefill tok/s @8k", "prefill_8k", ",.0f"),
        Column("decode tok/s @1k", "decode_1k", ",.0f"),
        Ratio("decode vs softmax @1k", "decode_1k", "decode_1k", marked("softmax")),
        Column("decode tok/s @8k", "decode_8k", ",.0f"),
        Ratio("decode vs softmax @8k", "decode_8k", "decode_8k", marked("softmax")),
        Column("memory/seq @1k MiB", "memory_1k_mib", ".2f"),
        Ratio("memory vs softmax @1k", "memory_1k_mib", "memory_1k_mib", marked("softmax")),
        Column("memory/seq @8k MiB", "memory_8k_mib", ".2f"),
        Ratio("memory vs softmax @8k", "memory_8k_mib", "memory_8k_mib", marked("softmax")),
    ),
    "soak": (
        Column("seconds", "seconds", ".0f"),
        Column("clients", "clients", "d"),
        Column("requests", "requests", "d"),
        Column("answered", "answered", "d"),
        Column("cancelled", "cancelled", "d"),
        Column("bad, refused as expected", "refused_as_expected", "d"),
        Column("5xx", "server_errors", "d"),
        Column("unanswered", "unanswered", "d"),
        Column("blocks used at end", "blocks_used_end", ".0f"),
        Column("running at end", "running_end", ".0f"),
        Column("passed", "passed"),
    ),
}
