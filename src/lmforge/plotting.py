"""Figures for reports and benchmarks: matplotlib without a display, PNGs written atomically."""

from __future__ import annotations

from pathlib import Path

from lmforge.fileio import atomic_path


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> None:
    """Lay the figure out, write it as a PNG atomically (a crash never leaves half a file) and free it."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    pyplot().close(fig)
