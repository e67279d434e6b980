"""Render BENCHMARKS.md's tables from the recorded results (benchmarks/results/<area>.json): no figure typed by hand.

A generated table sits between markers naming an area and one of its tables:

    <!-- results:serving:single -->
    (everything here is rewritten)
    <!-- /results -->

`tables/<area>.py` says, per table, which summary rows it shows and how (`columns.py`: columns,
formats, and ratios computed from the recorded numbers). A recorded timing (`record.spread`) shows as its median
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
from pathlib import Path

from columns import Column, Table
from tables import TABLES

from lmforge.fileio import write_text

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"<!-- results:([\w.-]+):([\w.-]+) -->\n(.*?)<!-- /results -->", re.DOTALL)


class RenderError(Exception):
    """A marked block that cannot be rendered (unknown table, missing results)."""


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
            ("figures over seeds are mean ± standard deviation", any("std" in v for v in values)),
            ("figures over tasks are mean ± standard error", any("se" in v for v in values)),
        )
        if present
    ) or "single measurements"
    return (
        f"Recorded in `{shown_path}`{quick}: commit {commit}{dirty}, {run.get('date', 'undated')}, "
        f"{m.get('cpu', 'unknown CPU')}{' (' + m['isa'] + ')' if m.get('isa') else ''}, {m.get('threads', '?')} threads; "
        f"{notes}."
    )


def render_block(area: str, name: str, results_dir: Path, markdown_dir: Path, tables: dict) -> str:
    """The text between the markers of one block."""
    table = tables.get(area, {}).get(name)
    if table is None:
        raise RenderError(f"no table spec for results:{area}:{name}; add it to benchmarks/tables/{area.replace('-', '_')}.py")
    path = results_dir / f"{area}.json"
    if not path.is_file():
        raise RenderError(f"{path} does not exist; run the benchmark its BENCHMARKS.md section names to record it")
    results = json.loads(path.read_text(encoding="utf-8"))
    rows = results.get("summary", {}).get(name)
    if not rows:
        raise RenderError(f"{path} records no {name!r} rows; run the section of the benchmark that records it")
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
