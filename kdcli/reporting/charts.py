"""Training curves for report.md, drawn with matplotlib (imported here only, when a report is written)."""

from __future__ import annotations

from pathlib import Path

from kdcli.io.files import atomic_write


def line_chart(path: Path, series: dict[str, list[float]], title: str, ylabel: str) -> None:
    """One PNG line chart of per-epoch series, the legend outside the axes so it never covers a curve."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(7.0, 3.4), dpi=110, layout="constrained")
    for name, points in series.items():
        axes.plot(
            range(1, len(points) + 1), points, label=name, linewidth=1.6, marker="o" if len(points) < 12 else None
        )
    axes.set_title(title)
    axes.set_xlabel("epoch")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize="small")
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))
    plt.close(figure)
