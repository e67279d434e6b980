"""BENCHMARKS.md's speculative-decoding table (benchmarks/speculative.py's records)."""

from columns import Column, Ratio


def _no_speculation_on_same_workload(row: dict, other: dict) -> bool:
    return other["method"] == "none" and other["workload"] == row["workload"] and other["dtype"] == row["dtype"]


TABLES = {
    "batch1": (
        Column("dtype", "dtype"),
        Column("workload", "workload"),
        Column("method", "method"),
        Column("requests", "requests", "d"),
        Column("decode tokens/s", "tokens_per_s", ".1f"),
        Ratio("speed-up", "tokens_per_s", "tokens_per_s", _no_speculation_on_same_workload),
        Column("drafts accepted", "accepted", ".0%"),
        Column("same output as without", "same_output", ".0%"),
    ),
}
