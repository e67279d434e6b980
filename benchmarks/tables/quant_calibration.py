"""BENCHMARKS.md's quantization calibration tables (benchmarks/quant_calibration.py's records)."""

from columns import Column

SELECTION = ("doc-prose", "numpy-code")
REPORT = ("man-prose", "pip-code", "stdlib-val")


def per_source(sources: tuple[str, ...]) -> tuple[Column, ...]:
    """Perplexity (mean ± std over calibration seeds) and its ratio to RTN's, for each evaluation source."""
    return tuple(c for s in sources for c in (Column(f"{s} ppl", s, ".2f"), Column(f"{s} / RTN", f"{s} vs rtn", ".3f")))


TABLES = {
    "perplexity": (Column("method", "method"), Column("calibration", "calibration")) + per_source(REPORT + SELECTION),
    "time": (
        Column("method", "method"),
        Column("calibration tokens", "calibration_tokens", ",d"),
        Column("seconds", "seconds", ".0f"),
    ),
    "perplexity_stdlib": (Column("method", "method"), Column("calibration", "calibration")) + per_source(REPORT + SELECTION),
    "ablation": (Column("GPTQ variant", "variant"), Column("seconds", "seconds", ".0f")) + per_source(SELECTION),
    "tokens": (Column("calibration tokens", "variant"), Column("seconds", "seconds", ".0f")) + per_source(SELECTION),
    "awq_search": (Column("AWQ search on", "variant"), Column("seconds", "seconds", ".0f")) + per_source(SELECTION),
}
