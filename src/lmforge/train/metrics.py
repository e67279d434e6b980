"""metrics.jsonl (one JSON object per logged step) and the loss curve plot."""

from __future__ import annotations

import json
from pathlib import Path

from lmforge.fileio import atomic_path
from lmforge.plotting import pyplot, save_figure


class MetricsLog:
    """Appends records to `metrics.jsonl`; on resume, drops records past the resumed step."""

    def __init__(self, path: str | Path, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.unlink(missing_ok=True)
        elif self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            with atomic_path(self.path) as tmp:
                tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")

    def write(self, record: dict) -> None:
        """Append one record and flush it to disk."""
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def read_metrics(path: str | Path) -> list[dict]:
    """All complete records of a metrics.jsonl (a torn last line is ignored)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def plot_loss(metrics_path: str | Path, png_path: str | Path) -> None:
    """Train and validation loss against tokens seen, written atomically as a PNG."""
    records = read_metrics(metrics_path)
    train = [r for r in records if "loss" in r]
    val = [r for r in records if "val_loss" in r and not r.get("final")]
    final = [r for r in records if r.get("final")]
    fig, ax = pyplot().subplots(figsize=(7, 4.2), dpi=110)
    if train:
        ax.plot([r["tokens"] for r in train], [r["loss"] for r in train], label="train loss", lw=1.2)
    if val:
        ax.plot([r["tokens"] for r in val], [r["val_loss"] for r in val], "o-", label="val loss (eval subset)", lw=1.2)
    if final:
        ax.plot([final[-1]["tokens"]], [final[-1]["val_loss"]], "*", ms=12, label="val loss (whole split)")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, png_path)
