"""Figures of `pai collapse`: per-layer density (SynFlow's Fig. 2) and layers alive.

Drawn on a bare matplotlib `Figure` (Agg canvas, no pyplot state), so they work headless and
never touch a user's interactive backend; files are written atomically.
"""

from __future__ import annotations

import math
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


def _palette(scorers: list[str]) -> dict[str, tuple[float, float, float]]:
    return dict(zip(scorers, sns.color_palette("colorblind", len(scorers)), strict=True))


def plot_layer_density(
    densities: pd.DataFrame, compression: float, title: str, path: str | Path
) -> Path:
    """log10 density of every prunable layer (x: its index) for every scorer, at one compression.

    `densities` has columns scorer, layer_index, density. Empty layers (density 0, log10 -inf)
    are drawn as crosses on a floor half a decade below the sparsest kept layer.
    """
    scorers = list(dict.fromkeys(densities["scorer"]))
    colors = _palette(scorers)
    kept = densities[densities["density"] > 0]
    floor = (
        math.log10(kept["density"].min()) - 0.5 if len(kept) else math.log10(1 / compression) - 1
    )
    figure = Figure(figsize=(7, 4.2))
    ax = figure.add_subplot()
    for scorer in scorers:
        rows = densities[densities["scorer"] == scorer].sort_values("layer_index")
        y = [math.log10(d) if d > 0 else floor for d in rows["density"]]
        ax.plot(
            rows["layer_index"], y, marker="o", markersize=4, color=colors[scorer], label=scorer
        )
        empty = rows["density"] == 0
        if empty.any():
            ax.scatter(
                rows["layer_index"][empty], [floor] * int(empty.sum()), marker="x", s=60,
                color=colors[scorer], zorder=3,
            )  # fmt: skip
    ax.axhline(math.log10(1 / compression), color="grey", linestyle="--", linewidth=1)
    ax.axhline(floor, color="black", linewidth=0.5)
    ax.text(ax.get_xlim()[0], floor, " empty layer (x)", va="bottom", fontsize=8)
    ax.set_xlabel("prunable layer (input to output)")
    ax.set_ylabel("log10 density of the layer")
    ax.set_xticks(sorted(set(densities["layer_index"])))
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _save(figure, path)


def plot_alive_layers(
    alive: pd.DataFrame, max_compression: float, title: str, path: str | Path
) -> Path:
    """Fraction of prunable layers that keep a weight against log10 compression.

    `alive` has columns scorer, seed, log10_compression, alive_fraction, source: "exact" rows
    are the exact step curves of one-shot scorers, "pruned" rows the masks actually pruned for
    iterative scorers (markers joined by lines: collapse between them is not observed).
    """
    scorers = list(dict.fromkeys(alive["scorer"]))
    colors = _palette(scorers)
    figure = Figure(figsize=(7, 4.2))
    ax = figure.add_subplot()
    for scorer in scorers:
        labelled = False
        for _seed, rows in alive[alive["scorer"] == scorer].groupby("seed", sort=True):
            rows = rows.sort_values(
                ["log10_compression", "alive_fraction"], ascending=[True, False]
            )
            exact = (rows["source"] == "exact").all()
            ax.plot(
                rows["log10_compression"], rows["alive_fraction"],
                drawstyle="steps-post" if exact else "default", marker=None if exact else "o",
                markersize=4, color=colors[scorer], alpha=0.8, label=None if labelled else scorer,
            )  # fmt: skip
            labelled = True
    ax.axvline(math.log10(max_compression), color="grey", linestyle="--", linewidth=1)
    ax.text(
        math.log10(max_compression), 0.02, " rho_max = N/L", rotation=90, va="bottom", fontsize=8
    )
    ax.set_xlabel("log10 compression (prunable / kept weights)")
    ax.set_ylabel("fraction of layers with a weight left")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _save(figure, path)
