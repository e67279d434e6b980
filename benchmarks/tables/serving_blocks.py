"""BENCHMARKS.md's cache block-size table (benchmarks/serving.py --sections blocks)."""

from columns import Column, Ratio

TABLES = {
    "blocks": (
        Column("block size (tokens)", "block_size", "d"),
        Column("ms per decode step", "ms_per_step", ".1f"),
        Column("output tok/s", "tokens_per_s", ".0f"),
        Ratio("step time vs default", "ms_per_step", "ms_per_step", lambda row, other: other["block_size"] == 16),
        Column("vs the default (16)", "vs_default"),
    ),
}
