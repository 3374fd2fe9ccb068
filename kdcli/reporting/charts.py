"""Figures drawn with matplotlib (imported here only, when a report is written), saved atomically as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdcli.io.files import atomic_write


def pyplot() -> Any:
    """matplotlib's pyplot on the non-interactive Agg backend (a heavy import, paid only by writing figures)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def save_figure(figure: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))
    pyplot().close(figure)


def line_chart(path: Path, series: dict[str, list[float]], title: str, ylabel: str) -> None:
    """One line chart of per-epoch series, the legend outside the axes so it never covers a curve."""
    figure, axes = pyplot().subplots(figsize=(7.0, 3.4), dpi=110, layout="constrained")
    for name, points in series.items():
        axes.plot(
            range(1, len(points) + 1), points, label=name, linewidth=1.6, marker="o" if len(points) < 12 else None
        )
    axes.set_title(title)
    axes.set_xlabel("epoch")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize="small")
    save_figure(figure, path)
