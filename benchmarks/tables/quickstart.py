"""BENCHMARKS.md's quickstart tables (benchmarks/quickstart.py)."""

from columns import Column

TABLES = {
    "choices": (
        Column("choice", "choice"),
        Column("parameters", "params", ","),
        Column("steps in the budget", "steps", ","),
        Column("training tokens/s", "tokens_per_second", ",.0f"),
        Column("validation half, bits/byte (chooses)", "validation_bpb", ".4f"),
        Column("test half, bits/byte (reports)", "test_bpb", ".4f"),
        Column("chosen", "chosen"),
    ),
    "bpb": (
        Column("", "system"),
        Column("bits per byte on validation", "bpb", ".3f"),
        Column("wall time (s)", "wall_s", ".0f"),
        Column("training tokens/s", "tokens_per_s", ",.0f"),
    ),
}
