"""BENCHMARKS.md's reasoning-effort tables (benchmarks/reasoning.py's records)."""

from columns import Column

SIGNAL_KEYS = (("DTR", "dtr"), ("length", "tokens"), ("mean log-prob", "logprob"), ("self-certainty", "certainty"))

EFFORT = {
    "accuracy": (
        Column("model", "model"),
        Column("task", "task"),
        Column("greedy accuracy", "accuracy", ".3f"),
        Column("mean sample tokens", "sample_tokens", ".1f"),
    ),
    "correlation": (
        Column("model", "model"),
        Column("task", "task"),
        Column("sample accuracy", "sample_accuracy", ".3f"),
        *(Column(f"{label} r (binned)", f"{key} binned", "+.3f") for label, key in SIGNAL_KEYS),
        *(Column(f"{label} r (samples)", f"{key} samples", "+.3f") for label, key in SIGNAL_KEYS),
    ),
    "think": (
        Column("model", "model"),
        Column("task", "task"),
        Column("n", "n", "d"),
        Column("rule", "rule"),
        Column("prefix", "prefix", "d"),
        Column("accuracy", "accuracy", ".3f"),
        Column("tokens per problem", "tokens", ",.0f"),
    ),
    "think_vs_cons": (
        Column("model", "model"),
        Column("task", "task"),
        Column("n", "n", "d"),
        Column("prefix", "prefix", "d"),
        Column("Think@n accuracy", "think_accuracy", ".3f"),
        Column("Cons@n accuracy", "cons_accuracy", ".3f"),
        Column("accuracy gap beyond the spread", "accuracy_gap_separated"),
        Column("share of Cons@n's tokens", "token_share", ".0%"),
    ),
    "replay_check": (
        Column("model", "model"),
        Column("task", "task"),
        Column("rule", "rule"),
        Column("problems", "problems", "d"),
        Column("same vote", "same_vote", "d"),
        Column("same tokens", "same_tokens", "d"),
    ),
}

TABLES = {
    "cost": (
        Column("batch", "batch", "d"),
        Column("tokens/s", "plain", ".1f"),
        Column("tokens/s with DTR", "dtr", ".1f"),
        Column("extra time per token", "extra", ".1%"),
    ),
    **EFFORT,
    **{f"{name}_words": columns for name, columns in EFFORT.items()},
    "difficulty_words": (
        Column("worked examples", "shots", "d"),
        Column("steps", "difficulty", "d"),
        Column("train greedy accuracy", "accuracy", ".3f"),
        Column("chosen", "chosen"),
    ),
}
