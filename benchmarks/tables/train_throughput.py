"""BENCHMARKS.md's training throughput table (benchmarks/train_throughput.py)."""

from columns import Column, Ratio, marked

TABLES = {
    "throughput": (
        Column("variant", "variant"),
        Column("tokens/s", "tokens_per_s", ",.0f"),
        Column("GFLOP/s", "gflops", ".0f"),
        Column("MFU", "mfu", ".1%"),
        Ratio("vs fp32", "tokens_per_s", "tokens_per_s", marked("fp32")),
        Column("first step (s)", "first_step_s", ".1f"),
    ),
}
