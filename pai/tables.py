"""Summaries of a comparison: accuracy over seeds per method, variant and compression.

The runs table (`runs.csv`, one row per run) is the data; these are views of it. A summary row
groups the runs of one method, variant and requested compression: their mean true compression,
the mean, sample standard deviation (n - 1) and count of test accuracy over seeds, the mean best
test accuracy, the fraction of collapsed runs and the mean search epochs.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from pai.atomic import atomic_write_text

GROUP = ["method", "variant", "requested_compression"]
SUMMARY_COLUMNS: tuple[str, ...] = (
    "method",
    "variant",
    "requested_compression",
    "compression",
    "n",
    "test_accuracy_mean",
    "test_accuracy_sd",
    "test_accuracy_min",
    "test_accuracy_max",
    "best_test_accuracy_mean",
    "collapsed_fraction",
    "search_epochs_mean",
    "effective_compression_median",
)


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per method, variant and requested compression, in the order runs first appear."""
    frame = runs.copy()
    frame["collapsed"] = frame["collapsed"].astype(bool)
    grouped = frame.groupby(GROUP, sort=False)
    summary = grouped.agg(
        compression=("compression", "mean"),
        n=("test_accuracy", "size"),
        test_accuracy_mean=("test_accuracy", "mean"),
        test_accuracy_sd=("test_accuracy", "std"),
        test_accuracy_min=("test_accuracy", "min"),
        test_accuracy_max=("test_accuracy", "max"),
        best_test_accuracy_mean=("best_test_accuracy", "mean"),
        collapsed_fraction=("collapsed", "mean"),
        search_epochs_mean=("search_epochs", "mean"),
        effective_compression_median=("effective_compression", "median"),
    ).reset_index()
    return summary[list(SUMMARY_COLUMNS)]


def _percent(value: float) -> str:
    return "" if math.isnan(value) else f"{100 * value:.2f}"


def _ratio(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.4g}"


def summary_markdown(summary: pd.DataFrame) -> str:
    """The summary as a markdown table: accuracies in percent, mean ± sd over n seeds."""
    rows = []
    for record in summary.to_dict("records"):
        spread = (
            ""
            if math.isnan(record["test_accuracy_sd"])
            else f" ± {_percent(record['test_accuracy_sd'])}"
        )
        rows.append(
            {
                "method": record["method"],
                "variant": record["variant"],
                "compression": _ratio(record["compression"]),
                "n": record["n"],
                "test acc. % (mean ± sd)": _percent(record["test_accuracy_mean"]) + spread,
                "best acc. %": _percent(record["best_test_accuracy_mean"]),
                "collapsed": f"{record['collapsed_fraction']:.2f}",
                "search epochs": f"{record['search_epochs_mean']:.3g}",
                "effective compression": _ratio(record["effective_compression_median"]),
            }
        )
    return pd.DataFrame(rows).to_markdown(index=False) + "\n"


def write_summary(runs: pd.DataFrame, out: str | Path) -> tuple[pd.DataFrame, str]:
    """Write `out/summary.csv` and `out/summary.md` atomically; return the summary and its text."""
    out = Path(out)
    summary = summarize(runs)
    text = summary_markdown(summary)
    atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
    atomic_write_text(out / "summary.md", text)
    return summary, text
