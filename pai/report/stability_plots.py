"""Figures of `pai stability`: test error along the linear paths, and instability against k.

Drawn from `path.csv` and `stability.csv` alone on a bare matplotlib `Figure` (Agg canvas, no
pyplot state); files are written atomically.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pai.core.atomic import atomic_write


def _save(figure: Figure, path: str | Path) -> Path:
    FigureCanvasAgg(figure)
    figure.tight_layout()
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=150))


def plot_error_along_path(path: pd.DataFrame, out: str | Path, *, title: str = "") -> Path:
    """Test error (%) against the interpolation coefficient, one line per rewinding step: the
    mean over seeds, the band spanning the seeds' lowest and highest error at each point."""
    rewinds = list(dict.fromkeys(path["rewind"]))
    colors = dict(zip(rewinds, sns.color_palette("viridis", len(rewinds)), strict=True))
    figure = Figure(figsize=(6.4, 4.2))
    ax = figure.add_subplot()
    for rewind in rewinds:
        by_alpha = path[path["rewind"] == rewind].groupby("alpha")["test_error"]
        mean, low, high = by_alpha.mean() * 100, by_alpha.min() * 100, by_alpha.max() * 100
        ax.plot(mean.index, mean.values, marker="o", markersize=3, color=colors[rewind],
                label=f"k = {rewind}")  # fmt: skip
        ax.fill_between(mean.index, low.values, high.values, color=colors[rewind], alpha=0.15)
    ax.set_xlabel("interpolation coefficient a: (1 - a) A + a B")
    ax.set_ylabel("test error (%)")
    ax.set_title(title or "test error along the linear path between two copies", fontsize=10)
    ax.legend(fontsize=8, title="copies trained from step", title_fontsize=8)
    ax.grid(alpha=0.3)
    return _save(figure, out)


def plot_instability(table: pd.DataFrame, out: str | Path, *, title: str = "") -> Path:
    """Instability (%) against the rewinding step k in iterations (symlog axis): every seed as
    a point, the mean over seeds as a line."""
    figure = Figure(figsize=(6.4, 4.2))
    ax = figure.add_subplot()
    mean = table.groupby("rewind_iterations")["instability"].mean() * 100
    ax.plot(mean.index, mean.values, marker="o", color="C0", label="mean over seeds")
    ax.scatter(table["rewind_iterations"], table["instability"] * 100, s=14, color="0.4",
               alpha=0.7, label="one seed", zorder=3)  # fmt: skip
    positive = table.loc[table["rewind_iterations"] > 0, "rewind_iterations"]
    ax.set_xscale("symlog", linthresh=int(positive.min()) if len(positive) else 1)
    ax.axhline(2, color="grey", linestyle="--", linewidth=1)
    ax.text(ax.get_xlim()[0], 2, " 2%: the paper's threshold for stable", va="bottom", fontsize=8)
    ax.set_xlabel("rewinding step k (iterations)")
    ax.set_ylabel("instability: max error on path - mean of ends (%)")
    ax.set_title(title or "instability against the step the copies start from", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(figure, out)
