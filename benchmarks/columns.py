"""How a rendered table shows recorded rows: columns of recorded fields, ratios between them, value formats.

Each area's table specs (`tables/<area>.py`) are built from these; `render.py` lays them out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


def median(value):
    """The number a cell or ratio uses: a recorded spread's median, a figure over seeds' mean, else the value."""
    if isinstance(value, dict):
        return value["median"] if "median" in value else value["mean"]
    return value


@dataclass(frozen=True)
class Column:
    """A column showing one recorded field of each row."""

    header: str
    key: str
    fmt: str = ""

    def cell(self, row: dict, rows: list[dict]) -> str:
        return format_value(row.get(self.key), self.fmt)


@dataclass(frozen=True)
class Ratio:
    """A column dividing a row's field by a field of the same row, or of the row `reference(row, other)` picks."""

    header: str
    numerator: str
    denominator: str
    reference: Callable[[dict, dict], bool] | None = None
    fmt: str = ".2f"

    def cell(self, row: dict, rows: list[dict]) -> str:
        base = row if self.reference is None else next((r for r in rows if self.reference(row, r)), None)
        num, den = median(row.get(self.numerator)), median(base.get(self.denominator)) if base else None
        return format_value(num / den if num is not None and den else None, self.fmt)


def format_value(value, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict) and "mean" in value:  # over seeds (± std) or over tasks (± standard error)
        text = format(value["mean"], fmt)
        return f"{text} ± {format(value.get('std', value.get('se')), fmt)}" if value["n"] > 1 else text
    if isinstance(value, dict):
        text = format(value["median"], fmt)
        return f"{text} ({format(value['min'], fmt)}–{format(value['max'], fmt)})" if value.get("n", 1) > 1 else text
    if isinstance(value, bool):
        return "yes" if value else "no"
    return format(value, fmt)


def marked(key: str) -> Callable[[dict, dict], bool]:
    """A reference picker: the row whose `key` is true."""
    return lambda row, other: bool(other.get(key))


Table = tuple[Column | Ratio, ...]  # how one table shows the rows recorded under summary[its name]
