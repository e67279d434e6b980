"""Render BENCHMARKS.md's tables from the recorded results (benchmarks/results/<area>.json): no figure typed by hand.

A generated table sits between markers naming an area and one of its tables:

    <!-- results:serving:single -->
    (everything here is rewritten)
    <!-- /results -->

`TABLES` says, per area and table, which summary rows it shows and how: columns, formats, and
ratios computed from the recorded numbers. A recorded timing (`record.spread`) shows as its median
with the spread of the repeats, "52.1 (50.3–53.0)". Under each table a line names the results file,
the commit and the date it was recorded on.

    python benchmarks/render.py            rewrite every marked block of BENCHMARKS.md
    python benchmarks/render.py --check    exit 1 when a block differs from what the results give
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lmforge.fileio import write_text

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"<!-- results:([\w.-]+):([\w.-]+) -->\n(.*?)<!-- /results -->", re.DOTALL)


class RenderError(Exception):
    """A marked block that cannot be rendered (unknown table, missing results)."""


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


Table = tuple[Column | Ratio, ...]  # how one table shows the rows recorded under summary[its name]


def format_value(value, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict) and "mean" in value:
        text = format(value["mean"], fmt)
        return f"{text} ± {format(value['std'], fmt)}" if value["n"] > 1 else text
    if isinstance(value, dict):
        text = format(value["median"], fmt)
        return f"{text} ({format(value['min'], fmt)}–{format(value['max'], fmt)})" if value.get("n", 1) > 1 else text
    if isinstance(value, bool):
        return "yes" if value else "no"
    return format(value, fmt)


def _marked(key: str) -> Callable[[dict, dict], bool]:
    """A reference picker: the row whose `key` is true."""
    return lambda row, other: bool(other.get(key))


def _peer_at_same_concurrency(row: dict, other: dict) -> bool:
    return other["server"] == "llama-server" and other["concurrency"] == row["concurrency"]


TABLES: dict[str, dict[str, Table]] = {
    "serving": {
        "single": (
            Column("weights", "weights"),
            Column("llama.cpp file", "peer"),
            Column("lmforge tok/s", "lmforge_tokens_per_s", ".1f"),
            Column("lmforge ms/token", "lmforge_ms_per_token", ".1f"),
            Column("llama-bench tg tok/s", "bench_tg_tokens_per_s", ".1f"),
            Ratio("lmforge / llama-bench", "lmforge_tokens_per_s", "bench_tg_tokens_per_s"),
            Column("llama-server tok/s", "server_tokens_per_s", ".1f"),
            Ratio("lmforge / llama-server", "lmforge_tokens_per_s", "server_tokens_per_s"),
            Column("lmforge prefill tok/s", "lmforge_prefill_tokens_per_s", ".0f"),
            Column("llama-bench pp tok/s", "bench_pp_tokens_per_s", ".0f"),
            Ratio("prefill ratio", "lmforge_prefill_tokens_per_s", "bench_pp_tokens_per_s"),
        ),
        "single_split": (
            Column("weights", "weights"),
            Column("ms/token", "ms_per_token", ".1f"),
            Column("matrix products ms (weights, attention)", "products_ms", ".1f"),
            Column("rest ms", "rest_ms", ".1f"),
            Ratio("products share", "products_ms", "ms_per_token", fmt=".0%"),
        ),
        "offline": (
            Column("engine", "engine"),
            Column("weights", "weights"),
            Column("requests", "requests", "d"),
            Column("output tok/s", "tokens_per_s", ",.0f"),
            Ratio("vs transformers (best batch)", "tokens_per_s", "tokens_per_s", _marked("transformers_best")),
            Ratio("vs one at a time (bf16)", "tokens_per_s", "tokens_per_s", _marked("sequential")),
        ),
        "online": (
            Column("concurrency", "concurrency", "d"),
            Column("server", "server"),
            Column("requests", "requests", "d"),
            Column("output tok/s", "tokens_per_s", ".1f"),
            Ratio("vs llama-server", "tokens_per_s", "tokens_per_s", _peer_at_same_concurrency),
            Column("TTFT p50 ms", "ttft_p50_ms", ",.0f"),
            Column("TTFT p99 ms", "ttft_p99_ms", ",.0f"),
            Column("ITL p50 ms", "itl_p50_ms", ".1f"),
            Column("ITL p99 ms", "itl_p99_ms", ".1f"),
        ),
        "prefix": (
            Column("prefix caching", "prefix_caching"),
            Column("cached tokens (later)", "cached_tokens", "d"),
            Column("first TTFT ms", "first_ttft_ms", ",.0f"),
            Column("later TTFT ms (median)", "later_ttft_ms", ",.0f"),
            Ratio("later / first", "later_ttft_ms", "first_ttft_ms"),
        ),
        "mixers": (
            Column("mixers", "mixer"),
            Column("parameters", "params", ",d"),
            Column("prefill tok/s @1k", "prefill_1k", ",.0f"),
            Column("prefill tok/s @8k", "prefill_8k", ",.0f"),
            Column("decode tok/s @1k", "decode_1k", ",.0f"),
            Ratio("decode vs softmax @1k", "decode_1k", "decode_1k", _marked("softmax")),
            Column("decode tok/s @8k", "decode_8k", ",.0f"),
            Ratio("decode vs softmax @8k", "decode_8k", "decode_8k", _marked("softmax")),
            Column("memory/seq @1k MiB", "memory_1k_mib", ".2f"),
            Ratio("memory vs softmax @1k", "memory_1k_mib", "memory_1k_mib", _marked("softmax")),
            Column("memory/seq @8k MiB", "memory_8k_mib", ".2f"),
            Ratio("memory vs softmax @8k", "memory_8k_mib", "memory_8k_mib", _marked("softmax")),
        ),
        "soak": (
            Column("seconds", "seconds", ".0f"),
            Column("clients", "clients", "d"),
            Column("requests", "requests", "d"),
            Column("answered", "answered", "d"),
            Column("cancelled", "cancelled", "d"),
            Column("bad, refused as expected", "refused_as_expected", "d"),
            Column("5xx", "server_errors", "d"),
            Column("unanswered", "unanswered", "d"),
            Column("blocks used at end", "blocks_used_end", ".0f"),
            Column("running at end", "running_end", ".0f"),
            Column("passed", "passed"),
        ),
    },
    "serving-blocks": {
        "blocks": (
            Column("block size (tokens)", "block_size", "d"),
            Column("ms per decode step", "ms_per_step", ".1f"),
            Column("output tok/s", "tokens_per_s", ".0f"),
            Ratio("step time vs default", "ms_per_step", "ms_per_step", lambda row, other: other["block_size"] == 16),
            Column("vs the default (16)", "vs_default"),
        ),
    },
}


def cells(table: Table, rows: list[dict]) -> list[dict[str, str]]:
    """Every row's cell texts by column header (what the table shows, also for printing it)."""
    return [{c.header: c.cell(row, rows) for c in table} for row in rows]


def render_table(table: Table, rows: list[dict]) -> str:
    header = "| " + " | ".join(c.header for c in table) + " |"
    rule = "|" + "|".join("---" if isinstance(c, Column) and not c.fmt else "---:" for c in table) + "|"  # text left
    body = ["| " + " | ".join(row.values()) + " |" for row in cells(table, rows)]
    return "\n".join([header, rule, *body])


def source_line(results: dict, name: str, rows: list[dict], shown_path: str) -> str:
    """Where table `name` was measured (its own provenance in the record, else the record's) and how its
    figures summarise repeats or seeds."""
    run = results.get("tables", {}).get(name, results)
    commit = (run.get("commit") or "unknown")[:10]
    dirty = " with uncommitted changes" if run.get("dirty") else ""
    quick = " (a --quick run)" if results.get("quick") else ""
    m = run.get("machine", {})
    values = [v for row in rows for v in row.values() if isinstance(v, dict)]
    notes = "; ".join(
        note
        for note, present in (
            ("timings are medians (min–max) of the repeats", any("median" in v for v in values)),
            ("figures over seeds are mean ± standard deviation", any("mean" in v for v in values)),
        )
        if present
    ) or "single measurements"
    return (
        f"Recorded in `{shown_path}`{quick}: commit {commit}{dirty}, {run.get('date', 'undated')}, "
        f"{m.get('cpu', 'unknown CPU')}, {m.get('threads', '?')} threads; "
        f"{notes}."
    )


def render_block(area: str, name: str, results_dir: Path, markdown_dir: Path, tables: dict) -> str:
    """The text between the markers of one block."""
    table = tables.get(area, {}).get(name)
    if table is None:
        raise RenderError(f"no table spec for results:{area}:{name}; add it to TABLES in benchmarks/render.py")
    path = results_dir / f"{area}.json"
    if not path.is_file():
        raise RenderError(f"{path} does not exist; run benchmarks/{area}.py to record it")
    results = json.loads(path.read_text(encoding="utf-8"))
    rows = results.get("summary", {}).get(name)
    if not rows:
        raise RenderError(f"{path} records no {name!r} rows; run that section of benchmarks/{area}.py")
    shown = Path(os.path.relpath(path, markdown_dir)).as_posix()
    return f"{render_table(table, rows)}\n\n{source_line(results, name, rows, shown)}\n"


def render_markdown(text: str, results_dir: Path, markdown_dir: Path, tables: dict = TABLES) -> str:
    """`text` with every marked block rewritten from the results."""

    def block(match: re.Match) -> str:
        area, name = match.group(1), match.group(2)
        body = render_block(area, name, results_dir, markdown_dir, tables)
        return f"<!-- results:{area}:{name} -->\n{body}<!-- /results -->"

    return BLOCK.sub(block, text)


def stale_blocks(text: str, results_dir: Path, markdown_dir: Path, tables: dict = TABLES) -> list[str]:
    """ "area:table" of every block whose text differs from what the results render."""
    return [
        f"{m.group(1)}:{m.group(2)}"
        for m in BLOCK.finditer(text)
        if m.group(3) != render_block(m.group(1), m.group(2), results_dir, markdown_dir, tables)
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 when a marked block differs from the recorded results")
    p.add_argument("--file", default=str(ROOT / "BENCHMARKS.md"), help="the markdown file (default BENCHMARKS.md)")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"), help="the results directory")
    args = p.parse_args()
    path, results = Path(args.file), Path(args.results)
    text = path.read_text(encoding="utf-8")
    try:
        if args.check:
            stale = stale_blocks(text, results, path.parent)
            if stale:
                sys.exit(
                    f"{path}: {', '.join(stale)} differ from the recorded results; run python benchmarks/render.py"
                )
            print(f"{path}: every marked table matches the recorded results")
            return
        rendered = render_markdown(text, results, path.parent)
    except RenderError as e:
        sys.exit(f"error: {e}")
    if rendered != text:
        write_text(path, rendered)
    print(f"{path}: {len(BLOCK.findall(text))} tables rendered")


if __name__ == "__main__":
    main()
