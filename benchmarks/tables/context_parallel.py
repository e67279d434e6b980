"""BENCHMARKS.md's context- and data-parallel tables (benchmarks/context_parallel.py)."""

from columns import Column, Ratio

MODES = ("one process", "Ulysses x2", "UPipe x2", "Ulysses x4", "UPipe x4")


def named(key: str, value: str):
    """A reference picker: the row whose `key` equals `value`."""
    return lambda row, other: other.get(key) == value


def ulysses_of(row: dict, other: dict) -> bool:
    """The Ulysses row over as many ranks as this one's (none for one process)."""
    mode = row.get("mode", "")
    return mode != "one process" and other.get("mode") == mode.replace("UPipe", "Ulysses")


TABLES = {
    "memory": (
        Column("T", "T", "d"),
        *(Column(f"{mode} MiB", mode, ",.1f") for mode in MODES),
        Ratio("UPipe / Ulysses x2", "UPipe x2", "Ulysses x2"),
        Ratio("UPipe / Ulysses x4", "UPipe x4", "Ulysses x4"),
    ),
    "budget": (
        Column("mode", "mode"),
        Column("kept bytes per token", "bytes_per_token", ",.0f"),
        Column("linear in T", "linear"),
        Column("longest T within the budget", "longest_T", ",d"),
    ),
    "time": (
        Column("mode", "mode"),
        Column("seconds per step", "seconds", ".2f"),
        Ratio("vs Ulysses", "seconds", "seconds", ulysses_of),
        Column("UPipe within 15% of Ulysses", "within_goal"),
    ),
    "recompute": (
        Column("layer", "layer"),
        Column("kept for backward MiB", "kept_mib", ",.1f"),
        Ratio("kept vs SDPA", "kept_mib", "kept_mib", named("layer", "softmax")),
        Column("seconds", "seconds", ".2f"),
        Ratio("time vs SDPA", "seconds", "seconds", named("layer", "softmax")),
    ),
    "data_parallel": (
        Column("mode", "mode"),
        Column("tokens/s", "tokens_per_s", ",.0f"),
        Column("tokens/s per rank", "per_rank", ",.0f"),
        Ratio("vs one process", "tokens_per_s", "tokens_per_s", named("mode", "one process")),
        Column("params + grads + optimizer MiB per rank", "state_mib", ",.1f"),
        Ratio("memory vs one process", "state_mib", "state_mib", named("mode", "one process")),
    ),
}
