"""BENCHMARKS.md's data pipeline tables (benchmarks/data_pipeline.py's records)."""

from columns import Column, Ratio

TABLES = {
    "agreement": (
        Column("documents", "documents"),
        Column("filter", "filter"),
        Column("n", "n", "d"),
        Column("same decision", "same_decision", ".1%"),
        Column("same decision and reason", "same_reason", ".1%"),
        Column("same text (both kept)", "same_text", ".1%"),
        Column("lmforge kept", "ours_kept", ".1%"),
        Column("datatrove kept", "peer_kept", ".1%"),
    ),
    "disagreements": (
        Column("documents", "documents"),
        Column("filter", "filter"),
        Column("lmforge", "lmforge"),
        Column("datatrove", "datatrove"),
        Column("count", "count", "d"),
    ),
    "speed": (
        Column("documents", "documents"),
        Column("n", "n", "d"),
        Column("lmforge docs/s", "lmforge_docs_s", ",.0f"),
        Column("datatrove docs/s", "datatrove_docs_s", ",.1f"),
        Ratio("speed-up", "lmforge_docs_s", "datatrove_docs_s", fmt=".1f"),
    ),
    "dedup_choice": (
        Column("verification", "verify"),
        Column("bands x rows", "bands_x_rows"),
        Column("threshold", "threshold", ".2f"),
        Column("precision", "precision", ".3f"),
        Column("recall", "recall", ".3f"),
        Column("F1", "f1", ".3f"),
        Column("chosen", "chosen"),
    ),
    "dedup_quality": (
        Column("tool", "tool"),
        Column("bands x rows", "bands_x_rows"),
        Column("verification", "verify"),
        Column("threshold", "threshold", ".2f"),
        Column("documents", "documents", ",d"),
        Column("true pairs", "true_pairs", ".0f"),
        Column("precision", "precision", ".3f"),
        Column("recall", "recall", ".3f"),
        Column("F1", "f1", ".3f"),
    ),
    "dedup_speed": (
        Column("tool", "tool"),
        Column("documents", "documents", ",d"),
        Column("dropped", "dropped", ",d"),
        Column("seconds", "seconds", ".2f"),
        Column("documents/s", "docs_s", ",.0f"),
        Ratio("vs lmforge default", "docs_s", "docs_s", lambda row, other: other["default"]),
    ),
}
