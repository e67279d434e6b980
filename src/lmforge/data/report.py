"""The pipeline report: `report.json` (every count) and `report.html` with PNG plots.

The plots are embedded in the HTML, so a report is exactly these two files wherever it is
written: beside the token shards, or in the work directory of a run that kept no documents.

Per step: documents and characters in and out, drops by reason, changes by kind; the
domain mix before and after mixing (bytes and shares, epochs per domain); the
language distribution where a language step labelled documents; tokens per split.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from lmforge.data.steps import StepStats
from lmforge.fileio import write_json, write_text


def _shares(sizes: dict[str, int]) -> dict[str, float]:
    total = sum(sizes.values()) or 1
    return {k: v / total for k, v in sizes.items()}


def report_dict(cfg, read: StepStats, totals: list[StepStats], mix: dict, languages: dict, manifest: dict) -> dict:
    """Everything the run counted, as plain JSON-ready data."""
    return {
        "read": {"documents": read.docs_out, "skipped": dict(read.dropped)},
        "steps": [{"type": spec["type"], **stats.to_dict()} for spec, stats in zip(cfg.steps, totals)],
        "domains": {"bytes_before": mix["before"], "bytes_after": mix["after"], "share_before": _shares(mix["before"]),
                    "share_after": _shares(mix["after"]), "epochs": mix["epochs"], "strategy": cfg.mix.strategy},
        "languages": dict(sorted(languages.items(), key=lambda kv: -kv[1])),
        "splits": manifest["splits"],
        "seconds": manifest["seconds"],
        "config": cfg.to_dict(),
    }


def _png(fig) -> str:
    """The figure as a PNG data URI for an <img> tag."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _plot(report: dict) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = {}
    if report["steps"]:
        fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(report["steps"])), dpi=110)
        labels = [f"{i + 1}. {s['type']}" for i, s in enumerate(report["steps"])][::-1]
        ax.barh(labels, [s["docs_in"] for s in report["steps"]][::-1], color="#ccc", label="documents in")
        ax.barh(labels, [s["docs_out"] for s in report["steps"]][::-1], color="#3a7", label="documents out")
        ax.set_xlabel("documents")
        ax.legend(loc="lower right")
        plots["documents per step"] = _png(fig)
    domains = sorted(set(report["domains"]["share_before"]) | set(report["domains"]["share_after"]))
    if domains:
        fig, ax = plt.subplots(figsize=(7, 0.8 + 0.5 * len(domains)), dpi=110)
        y = range(len(domains))
        ax.barh([i + 0.2 for i in y], [report["domains"]["share_before"].get(d, 0) for d in domains], 0.4, label="before mixing")
        ax.barh([i - 0.2 for i in y], [report["domains"]["share_after"].get(d, 0) for d in domains], 0.4, label="after mixing")
        ax.set_yticks(list(y), domains)
        ax.set_xlabel("share of training bytes")
        ax.legend(loc="lower right")
        plots["domain shares"] = _png(fig)
    return plots


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(directory: Path, cfg, read: StepStats, totals: list[StepStats], mix: dict, languages: dict,
                 manifest: dict) -> dict:
    """Write report.json and report.html (its plots embedded) into `directory`; return the report."""
    report = report_dict(cfg, read, totals, mix, languages, manifest)
    write_json(directory / "report.json", report)
    plots = _plot(report)
    step_rows = [[i + 1, s["type"], s["docs_in"], s["docs_out"], s["chars_in"], s["chars_out"],
                  ", ".join(f"{k}: {v}" for k, v in s["dropped"].items()), ", ".join(f"{k}: {v}" for k, v in s["changed"].items())]
                 for i, s in enumerate(report["steps"])]
    d = report["domains"]
    domain_rows = [[k, d["bytes_before"].get(k, 0), f"{d['share_before'].get(k, 0):.1%}", d["bytes_after"].get(k, 0),
                    f"{d['share_after'].get(k, 0):.1%}", f"{d['epochs'].get(k, 0):.2f}"] for k in sorted(d["bytes_before"])]
    split_rows = [[name, s["documents"], s["bytes"], s["tokens"]] for name, s in report["splits"].items()]
    parts = [
        "<!doctype html><meta charset='utf-8'><title>lmforge data report</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}</style>",
        f"<h1>Data pipeline report</h1><p>{report['seconds']} s; output {html.escape(cfg.output.dir)}</p>",
        f"<h2>Steps</h2><p>read {report['read']['documents']:,} documents; skipped bad records: "
        f"{html.escape(', '.join(f'{k}: {v}' for k, v in report['read']['skipped'].items()) or 'none')}</p>",
        _table(["#", "step", "docs in", "docs out", "chars in", "chars out", "dropped", "changed"], step_rows),
        f"<h2>Domains (strategy {html.escape(d['strategy'])})</h2>",
        _table(["domain", "bytes before", "share", "bytes after", "share", "epochs"], domain_rows),
    ]
    if report["languages"]:
        parts += ["<h2>Languages</h2>", _table(["language", "documents"], [[k, v] for k, v in report["languages"].items()])]
    parts += ["<h2>Splits</h2>", _table(["split", "documents", "bytes", "tokens"], split_rows)]
    parts += [f"<p><img src='{uri}' alt='{name}'></p>" for name, uri in plots.items()]
    write_text(directory / "report.html", "\n".join(parts) + "\n")
    return report
