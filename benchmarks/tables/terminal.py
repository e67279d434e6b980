"""BENCHMARKS.md's terminal-task tables (benchmarks/terminal.py's records)."""

from columns import Column

TABLES = {
    "generator": (
        Column("family", "family"),
        Column("domain", "domain"),
        Column("skills", "skills"),
        Column("tasks", "tasks", "d"),
        Column("tasks/s generated", "tasks_per_second", ",.0f"),
        Column("sound verifiers", "sound", ".0%"),
        Column("seconds per check", "check_seconds", ".2f"),
    ),
    "sft": (
        Column("tasks", "group"),
        Column("model", "model"),
        Column("n", "tasks", "d"),
        Column("pass rate", "pass_rate", ".0%"),
        Column("mean score ± s.e.", "score", ".3f"),
        Column("tuned - base ± s.e.", "difference", "+.3f"),
        Column("clear (> 2 s.e.)", "clear"),
        Column("malformed turns", "malformed", ".0%"),
        Column("sandbox seconds per task", "sandbox_seconds", ".2f"),
    ),
    "sft_domains": (
        Column("domain", "domain"),
        Column("held out", "held_out"),
        Column("base score", "base", ".3f"),
        Column("tuned score", "tuned", ".3f"),
    ),
}
