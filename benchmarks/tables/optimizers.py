"""BENCHMARKS.md's optimizer tables (benchmarks/optimizers.py's records)."""

from columns import Column, Ratio

TABLES = {
    "sweep": (
        Column("optimizer", "optimizer"),
        Column("matrix lr", "matrix_lr", "g"),
        Column("validation loss (seed 0)", "val_loss", ".4f"),
        Column("chosen", "chosen"),
        Column("best inside the sweep", "interior"),
    ),
    "seeds": (
        Column("optimizer", "optimizer"),
        Column("matrix lr", "matrix_lr", "g"),
        Column("test loss", "test_loss", ".4f"),
        Column("test bits/byte", "test_bpb", ".4f"),
        Column("minus AdamW", "minus_adamw", "+.4f"),
        Column("vs AdamW", "vs_adamw"),
        Column("steps to AdamW's final test loss", "steps_to_adamw", ".0f"),
        Column("seeds reaching it", "reached"),
        Ratio("share of AdamW's steps", "steps_to_adamw", "steps", fmt=".0%"),
        Column("optimizer share of step time", "optimizer_share", ".1%"),
        Column("ms/step", "ms_per_step", ".0f"),
    ),
    "long": (
        Column("optimizer", "optimizer"),
        Column("matrix lr", "matrix_lr", "g"),
        Column("steps", "steps", "d"),
        Column("test loss", "test_loss", ".4f"),
        Column("test bits/byte", "test_bpb", ".4f"),
        Column("minus AdamW", "minus_adamw", "+.4f"),
        Column("steps to AdamW's final test loss", "steps_to_adamw", "d"),
        Ratio("share of AdamW's steps", "steps_to_adamw", "steps", fmt=".0%"),
    ),
}
