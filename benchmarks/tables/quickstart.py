"""BENCHMARKS.md's quickstart table (benchmarks/quickstart.py)."""

from columns import Column

TABLES = {
    "bpb": (
        Column("", "system"),
        Column("bits per byte on validation", "bpb", ".3f"),
        Column("wall time (s)", "wall_s", ".0f"),
        Column("training tokens/s", "tokens_per_s", ",.0f"),
    ),
}
