"""BENCHMARKS.md's structured-output tables (benchmarks/structured.py's records)."""

from columns import Column, Ratio


def _llguidance_on_same_schema(row: dict, other: dict) -> bool:
    return other["library"] == "llguidance" and other["schema"] == row["schema"]


def _free_at_same_concurrency(row: dict, other: dict) -> bool:
    return other["mode"] == "free" and other["concurrency"] == row["concurrency"]


TABLES = {
    "backends": (
        Column("schema", "schema"),
        Column("library", "library"),
        Column("accepted", "accepted"),
        Column("instance tokens", "tokens", "d"),
        Column("instance allowed", "instance_allowed"),
        Column("end allowed after it", "end_allowed"),
        Column("compile ms (new schema)", "compile_ms", ".2f"),
        Ratio("compile vs llguidance", "compile_ms", "compile_ms", _llguidance_on_same_schema),
        Column("first mask us (after it)", "first_mask_us", ",.0f"),
        Column("mask us (along the instance)", "mask_us", ".1f"),
        Ratio("mask vs llguidance", "mask_us", "mask_us", _llguidance_on_same_schema),
        Column("tokenizer set-up ms", "setup_ms", ",.0f"),
    ),
    "engine": (
        Column("concurrency", "concurrency", "d"),
        Column("mode", "mode"),
        Column("all requests at max_tokens", "full_length"),
        Column("output tok/s", "tokens_per_s", ".1f"),
        Ratio("tok/s vs free", "tokens_per_s", "tokens_per_s", _free_at_same_concurrency),
        Column("TTFT ms", "ttft_ms", ",.0f"),
        Ratio("TTFT vs free", "ttft_ms", "ttft_ms", _free_at_same_concurrency),
        Column("ms/token", "ms_per_token", ".1f"),
        Ratio("ms/token vs free", "ms_per_token", "ms_per_token", _free_at_same_concurrency),
        Column("meets ms/token goal (<= 1.10)", "token_goal"),
        Column("meets TTFT goal (<= 1.20)", "ttft_goal"),
    ),
}
