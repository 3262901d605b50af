"""The comparison figure: test accuracy against compression, every method on one axis.

Log x axis (compression = prunable / kept weights, with the percentage kept on top); per method
the mean over seeds with a band from the lowest to the highest seed; the dense network as a
grey horizontal reference (its band likewise); IMP black and dashed, as the reference every
pruning-at-initialization method is measured against; collapsed runs (an empty layer or no
input-output path left) as crosses. Sanity-check variants get small panels below, one per
method: its original line beside each ablation (shuffle dotted, reinit dash-dotted, invert
dashed), so that what the checks do to a method reads at a glance.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator, PercentFormatter

from pai.core.atomic import atomic_write
from pai.report.schema import DENSE, IMP, ORIGINAL

# The sanity checks' (color, line style, marker); every other variant (the weight variants
# and perturbations) gets one of `OTHER_MARKERS` in a color of its own, in order of first use.
VARIANT_LOOKS = {
    "shuffle": ("#8c564b", ":", "s"),
    "reinit": ("#e377c2", "-.", "^"),
    "invert": ("#7f7f7f", "--", "v"),
}
OTHER_MARKERS = ("D", "P", "X", "*", "h", "<", ">", "p", "d", "H", "8", "1")


def _variant_looks(variants: list[str]) -> dict[str, tuple[object, str, str]]:
    """(color, line style, marker) of each variant, distinct for up to 12 others."""
    others = [v for v in variants if v not in VARIANT_LOOKS]
    palette = sns.color_palette("husl", n_colors=max(len(others), 1))
    looks = {v: VARIANT_LOOKS[v] for v in variants if v in VARIANT_LOOKS}
    for index, variant in enumerate(others):
        looks[variant] = (palette[index], ":", OTHER_MARKERS[index % len(OTHER_MARKERS)])
    return looks


def _colors(methods: list[str]) -> dict[str, object]:
    others = [m for m in methods if m != IMP]
    # tab10 repeats itself after ten methods; tab20 keeps up to twenty apart
    palette = sns.color_palette("tab10" if len(others) <= 10 else "tab20", max(len(others), 1))
    colors: dict[str, object] = dict(zip(others, palette, strict=False))
    colors[IMP] = "black"
    return colors


def _curve(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, min and max accuracy over seeds per requested compression, at the mean true one."""
    return (
        runs.groupby("requested_compression")
        .agg(
            compression=("compression", "mean"),
            mean=("test_accuracy", "mean"),
            low=("test_accuracy", "min"),
            high=("test_accuracy", "max"),
            n=("test_accuracy", "size"),
        )
        .reset_index()
        .sort_values("compression")
    )


def _draw_method(ax, runs: pd.DataFrame, color, linestyle, marker, label, linewidth=1.8) -> None:
    curve = _curve(runs)
    ax.plot(
        curve["compression"],
        curve["mean"],
        color=color,
        linestyle=linestyle,
        marker=marker,
        markersize=4,
        linewidth=linewidth,
        label=label,
    )
    if (curve["n"] > 1).any():
        ax.fill_between(curve["compression"], curve["low"], curve["high"], color=color, alpha=0.15)


def _draw_dense(ax, dense: pd.DataFrame) -> None:
    if dense.empty:
        return
    mean = dense["test_accuracy"].mean()
    ax.axhline(mean, color="0.45", linewidth=1.2, label=f"dense ({100 * mean:.2f}%)")
    if len(dense) > 1:
        low, high = dense["test_accuracy"].min(), dense["test_accuracy"].max()
        ax.axhspan(low, high, color="0.45", alpha=0.12, linewidth=0)


def _draw_collapsed(ax, runs: pd.DataFrame, colors: dict[str, object]) -> bool:
    collapsed = runs[runs["collapsed"].astype(bool)]
    for method, group in collapsed.groupby("method", sort=False):
        ax.scatter(
            group["compression"],
            group["test_accuracy"],
            marker="x",
            s=60,
            linewidths=2,
            color=colors.get(method, "red"),
            zorder=5,
        )
    return not collapsed.empty


def _percent_kept(compression):
    """Compression <-> percentage of weights kept (its own inverse); 0 maps to inf, not an error."""
    with np.errstate(divide="ignore"):
        return 100 / np.asarray(compression, dtype=float)


def _spread_out(compressions: list[float], fraction: float = 0.15) -> set[float]:
    """The compressions to label on a narrow axis: from the largest down, each at least
    `fraction` of the axis's log span from the last one labelled (the smallest always kept)."""
    ordered = sorted(compressions, reverse=True)
    span = math.log10(ordered[0] / ordered[-1]) or 1.0
    labelled = [ordered[0]]
    for value in ordered[1:-1]:
        if math.log10(labelled[-1] / value) >= fraction * span:
            labelled.append(value)
    if len(ordered) > 1 and ordered[-1] not in labelled:
        if math.log10(labelled[-1] / ordered[-1]) < fraction * span and len(labelled) > 1:
            labelled.pop()
        labelled.append(ordered[-1])
    return set(labelled)


def _format_axis(ax, compressions: list[float], *, small: bool = False) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(compressions))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.set_xlabel("compression" if small else "compression (prunable / kept weights, log scale)")
    ax.set_ylabel("test accuracy")
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))  # decimals as the range needs
    if small:
        labelled = _spread_out(compressions)
        ax.xaxis.set_major_formatter(
            FuncFormatter(lambda value, _: f"{value:g}" if value in labelled else "")
        )
        ax.tick_params(labelsize="small")
        return
    top = ax.secondary_xaxis("top", functions=(_percent_kept, _percent_kept))
    top.set_xlabel("weights kept (%)")
    top.xaxis.set_major_locator(FixedLocator([100 / c for c in compressions]))
    top.xaxis.set_minor_locator(NullLocator())
    top.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.3g}"))


def plot_accuracy_vs_compression(
    runs: pd.DataFrame, path: str | Path, *, title: str | None = None
) -> Path:
    """Draw the runs table (see `pai.report.schema.RUN_COLUMNS`) into a PNG at `path`, atomically."""
    with matplotlib.rc_context():  # seaborn's theme for this figure only
        sns.set_theme(style="whitegrid", context="notebook")
        fig = _figure(runs, title)
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=130, format="png"))


def _figure(runs: pd.DataFrame, title: str | None) -> Figure:
    """The main panel (every method's originals) above one small panel per checked method."""
    pruned = runs[runs["method"] != DENSE]
    dense = runs[runs["method"] == DENSE]
    methods = list(dict.fromkeys(pruned["method"]))
    colors = _colors(methods)
    compressions = sorted(set(pruned["requested_compression"]))
    checked = [m for m in methods if set(pruned[pruned["method"] == m]["variant"]) - {ORIGINAL}]
    rows = math.ceil(len(checked) / 4)
    # a Figure with the Agg canvas, not pyplot: no global figure state, no display needed
    fig = Figure(figsize=(11, 5.6 + 3.3 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    if checked:
        top, bottom = fig.subfigures(2, 1, height_ratios=[5.6, 3.3 * rows])
        _draw_checks(bottom, pruned, dense, checked, colors, compressions)
    else:
        top = fig
    _draw_originals(top.subplots(), pruned, dense, methods, colors, compressions)
    if title:
        fig.suptitle(title, fontweight="bold")
    return fig


def _draw_originals(main, pruned, dense, methods, colors, compressions) -> None:
    """Every method's original tickets against the dense reference, IMP dashed."""
    originals = pruned[pruned["variant"] == ORIGINAL]
    _draw_dense(main, dense)
    for method in methods:
        group = originals[originals["method"] == method]
        if group.empty:
            continue
        imp = method == IMP
        _draw_method(
            main,
            group,
            colors[method],
            "--" if imp else "-",
            "D" if imp else "o",
            method,
            linewidth=2.2 if imp else 1.8,
        )
    any_collapsed = _draw_collapsed(main, originals, colors)
    _format_axis(main, compressions)
    main.set_title("every ticket trained under the same budget (mean, band: min to max over seeds)")
    handles, labels = main.get_legend_handles_labels()
    if any_collapsed:
        handles.append(Line2D([], [], color="0.2", marker="x", linestyle="", markersize=8))
        labels.append("collapsed run")
    main.legend(handles, labels, fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))


def _draw_checks(bottom, pruned, dense, checked, colors, compressions) -> None:
    """One panel per method with sanity checks: its original beside each ablated variant."""
    variants = [v for v in dict.fromkeys(pruned["variant"]) if v != ORIGINAL]
    looks = _variant_looks(variants)
    rows = math.ceil(len(checked) / 4)
    columns = math.ceil(len(checked) / rows)
    axes = bottom.subplots(rows, columns, sharey=True, squeeze=False).flatten()
    for ax, method in zip(axes, checked, strict=False):
        _draw_dense(ax, dense)
        for variant in [ORIGINAL, *variants]:
            group = pruned[(pruned["method"] == method) & (pruned["variant"] == variant)]
            if group.empty:
                continue
            if variant == ORIGINAL:
                _draw_method(ax, group, colors[method], "-", "o", None, linewidth=2.2)
            else:
                _draw_method(ax, group, *looks[variant], None)
        _draw_collapsed(ax, pruned[pruned["method"] == method], colors)
        _format_axis(ax, compressions, small=True)
        ax.set_title(method, fontsize="medium")
        if ax.get_subplotspec().colspan.start:
            ax.set_ylabel("")
    for ax in axes[len(checked) :]:
        ax.set_visible(False)
    legend = [Line2D([], [], color="0.45", linewidth=1.2, label="dense")]
    legend += [Line2D([], [], color="0.2", linewidth=2.2, marker="o", label="original")]
    legend += [
        Line2D([], [], color=looks[v][0], linestyle=looks[v][1], marker=looks[v][2], label=v)
        for v in variants
    ]
    bottom.legend(handles=legend, loc="outside right center", fontsize="small")
    bottom.suptitle("sanity checks (Frankle et al. 2021): the same method's mask ablated")
