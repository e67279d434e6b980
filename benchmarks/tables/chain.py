"""BENCHMARKS.md's whole-chain tables (benchmarks/chain.py's records)."""

from columns import Column

TABLES = {
    "stages": (
        Column("stage", "stage"),
        Column("seconds", "seconds", ".1f"),
        Column("figures", "figures"),
    ),
    "total": (
        Column("command", "command"),
        Column("seconds", "seconds", ".0f"),
        Column("goal (s)", "goal_s", "d"),
        Column("within the goal", "within_goal"),
    ),
}
