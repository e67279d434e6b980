"""BENCHMARKS.md's multi-turn probe tables (benchmarks/multiturn.py's records)."""

from columns import Column

TURNS = (0, 1, 2, 4, 8, 16, 24)

TABLES = {
    "accuracy": (
        Column("model", "model"),
        Column("weights", "weights"),
        *(Column(f"k = {k}", f"k{k}", ".2f") for k in TURNS),
    ),
    "training": (
        Column("model", "model"),
        Column("mixers", "mixers"),
        Column("parameters", "parameters", ",d"),
        Column("training seconds", "seconds", ".0f"),
        Column("validation loss", "val_loss", ".3f"),
    ),
}
