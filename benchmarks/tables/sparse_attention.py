"""BENCHMARKS.md's sparse attention tables (benchmarks/sparse_attention.py's records)."""

from columns import Column, Ratio

QUALITY = (
    Column("model", "model"),
    Column("validation loss", "loss", ".4f"),
    Column("block sparsity", "sparsity", ".2f"),
    Column("excess loss", "excess", ".4f"),
    Column("excess over", "reference"),
    Column("share of the sparse penalty removed", "removed", ".0%"),
    Column("excess vs fine-tuned", "vs_finetuned"),
)

TABLES = {
    "speed": (
        Column("T", "T", ",d"),
        Column("top-k fraction", "top_k", ".2f"),
        Column("block sparsity", "sparsity", ".2f"),
        Column("dense fwd (s)", "dense_fwd", ".4f"),
        Column("flex fwd (s)", "flex_fwd", ".4f"),
        Ratio("flex vs dense (x)", "dense_fwd", "flex_fwd"),
        Column("dense fwd+bwd (s)", "dense_fwdbwd", ".3f"),
        Column("gather fwd+bwd (s)", "gather_fwdbwd", ".3f"),
        Ratio("gather vs dense (x)", "dense_fwdbwd", "gather_fwdbwd"),
        Column("gather fwd (s)", "gather_fwd", ".4f"),
        Column("mask prediction (s)", "predict", ".4f"),
        Ratio("mask share of flex", "predict", "flex_fwd", fmt=".1%"),
    ),
    "masks": (
        Column("model", "model"),
        Column("rule", "rule"),
        Column("relative L1 error", "error", ".4f"),
        Column("block sparsity", "sparsity", ".3f"),
        Column("vs top-k only", "vs_top_k"),
    ),
    "quality": QUALITY,  # the default --steps; other step counts record quality_<steps>
    "quality_300": QUALITY,
    "quality_1000": QUALITY,
}
