"""Summaries of a comparison: accuracy over seeds per method, variant and compression.

The runs table (`runs.csv`, one row per run) is the data; these are views of it. A summary row
groups the runs of one method, variant and requested compression: their mean true compression,
the mean, sample standard deviation (n - 1), 95% confidence half-width (Student's t, n - 1
degrees of freedom) and count of test accuracy over seeds, the mean best test accuracy, the
fraction of collapsed runs and the mean search epochs.

A sanity-check row (variant other than `original`) is also compared with its original, seed by
seed: `delta_vs_original_mean` is the mean of (variant - original) test accuracy over the seeds
both have, `delta_vs_original_ci95` its t-based 95% half-width and `delta_vs_original_p` the
two-sided p-value of the paired t-test (scipy's `ttest_rel`). A check that hurts has a negative
delta whose interval excludes 0 (Frankle et al. 2021: if it does not, only the layerwise
densities mattered). With 3 seeds these intervals are wide; they say so.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from pai.core.atomic import atomic_write_text
from pai.core.errors import PaiError, unknown_name
from pai.report.schema import DENSE, ORIGINAL

GROUP = ["method", "variant", "requested_compression"]
SUMMARY_COLUMNS: tuple[str, ...] = (
    "method",
    "variant",
    "requested_compression",
    "compression",
    "n",
    "test_accuracy_mean",
    "test_accuracy_sd",
    "test_accuracy_ci95",
    "test_accuracy_min",
    "test_accuracy_max",
    "best_test_accuracy_mean",
    "collapsed_fraction",
    "search_epochs_mean",
    "effective_compression_median",
    "delta_vs_original_mean",
    "delta_vs_original_ci95",
    "delta_vs_original_p",
)


def ci95_half_width(values: pd.Series) -> float:
    """The 95% confidence half-width of the mean of `values` (Student's t); NaN below 2."""
    n = values.count()
    if n < 2:
        return math.nan
    return float(stats.t.ppf(0.975, n - 1) * values.std() / math.sqrt(n))


def _paired_p_value(variant: pd.Series, original: pd.Series) -> float:
    """Two-sided p-value of the paired t-test; NaN below 2 pairs or when every pair is equal."""
    if len(variant) < 2 or np.array_equal(variant.to_numpy(), original.to_numpy()):
        return math.nan
    with warnings.catch_warnings():  # identical differences: t is infinite, p is 0
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_rel(variant, original).pvalue)


def paired_deltas(runs: pd.DataFrame) -> pd.DataFrame:
    """Per sanity-check group: (variant - original) test accuracy paired by seed, summarized."""
    keys = ["method", "requested_compression", "seed"]
    originals = runs[runs["variant"] == ORIGINAL][[*keys, "test_accuracy"]]
    checks = runs[runs["variant"] != ORIGINAL][[*keys, "variant", "test_accuracy"]]
    pairs = checks.merge(originals, on=keys, suffixes=("", "_original"))
    rows = []
    for group, pair in pairs.groupby(GROUP, sort=False):
        delta = pair["test_accuracy"] - pair["test_accuracy_original"]
        rows.append(
            dict(
                zip(GROUP, group, strict=True),
                delta_vs_original_mean=delta.mean(),
                delta_vs_original_ci95=ci95_half_width(delta),
                delta_vs_original_p=_paired_p_value(
                    pair["test_accuracy"], pair["test_accuracy_original"]
                ),
            )
        )
    columns = [*GROUP, "delta_vs_original_mean", "delta_vs_original_ci95", "delta_vs_original_p"]
    return pd.DataFrame(rows, columns=columns)


def summary_keys(runs: pd.DataFrame, by: Sequence[str] = GROUP) -> list[str]:
    """The columns a summary row stands for: `by`, then the keys of `GROUP` it leaves out.

    A key left out of `by` must be constant over `runs` (leaving it out then changes no group);
    pooling runs of different methods, variants or compressions into one mean is refused.
    `by` may add `seed`, one row per run.
    """
    allowed = (*GROUP, "seed")
    for key in by:
        if key not in allowed:
            raise unknown_name("summary key", key, allowed)
    if len(set(by)) != len(by):
        raise PaiError(f"summary keys {', '.join(by)} name a key twice")
    for key in GROUP:
        values = runs[key].drop_duplicates().tolist() if key in runs else []
        if key not in by and len(values) > 1:
            shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
            raise PaiError(
                f"the runs differ in {key} ({shown}) and a summary row would average them; "
                f"add {key} to the keys"
            )
    return [*by, *(key for key in GROUP if key not in by)]


def summarize(runs: pd.DataFrame, by: Sequence[str] = GROUP) -> pd.DataFrame:
    """One row per method, variant and requested compression (or per `by`, see
    `summary_keys`), in the order runs first appear."""
    keys = summary_keys(runs, by)
    frame = runs.copy()
    frame["collapsed"] = frame["collapsed"].astype(bool)
    grouped = frame.groupby(keys, sort=False)
    summary = grouped.agg(
        compression=("compression", "mean"),
        n=("test_accuracy", "size"),
        test_accuracy_mean=("test_accuracy", "mean"),
        test_accuracy_sd=("test_accuracy", "std"),
        test_accuracy_ci95=("test_accuracy", ci95_half_width),
        test_accuracy_min=("test_accuracy", "min"),
        test_accuracy_max=("test_accuracy", "max"),
        best_test_accuracy_mean=("best_test_accuracy", "mean"),
        collapsed_fraction=("collapsed", "mean"),
        search_epochs_mean=("search_epochs", "mean"),
        effective_compression_median=("effective_compression", "median"),
    ).reset_index()
    if "seed" in keys:  # one run per row: nothing to pair
        deltas = paired_deltas(frame.iloc[0:0])
        return summary.merge(deltas, on=GROUP, how="left")[["seed", *SUMMARY_COLUMNS]]
    summary = summary.merge(paired_deltas(frame), on=GROUP, how="left")
    return summary[list(SUMMARY_COLUMNS)]


def _percent(value: float) -> str:
    return "" if math.isnan(value) else f"{100 * value:.2f}"


def _ratio(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.4g}"


def _delta(record: dict) -> str:
    """`-5.12 ± 2.30` for a sanity check (percentage points), blank for an original."""
    mean, half_width = record["delta_vs_original_mean"], record["delta_vs_original_ci95"]
    if math.isnan(mean):
        return ""
    return f"{100 * mean:+.2f}" + ("" if math.isnan(half_width) else f" ± {100 * half_width:.2f}")


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
                **({"seed": record["seed"]} if "seed" in record else {}),
                "method": record["method"],
                "variant": record["variant"],
                "compression": _ratio(record["compression"]),
                "n": record["n"],
                "test acc. % (mean ± sd)": _percent(record["test_accuracy_mean"]) + spread,
                "best acc. %": _percent(record["best_test_accuracy_mean"]),
                "collapsed": f"{record['collapsed_fraction']:.2f}",
                "search epochs": f"{record['search_epochs_mean']:.3g}",
                "effective compression": _ratio(record["effective_compression_median"]),
                "Δ vs original, points (95% CI)": _delta(record),
            }
        )
    return pd.DataFrame(rows).to_markdown(index=False) + "\n"


def summary_latex(summary: pd.DataFrame, caption: str | None = None) -> str:
    """The summary as a LaTeX table a paper can paste (booktabs: `\\usepackage{booktabs}`).

    Rows are the summary's keys other than the compression, columns the requested
    compressions; a cell is the mean test accuracy in percent ± its 95% t half-width (the mean
    alone for one seed), and the best mean of each compression is bold (ties all bold; the
    dense reference is never marked). Rendered by pandas' `Styler.to_latex`.
    """
    rows = [key for key in summary.columns if key in ("seed", "method", "variant")]
    cells: dict[tuple, dict[float, tuple[float, str]]] = {}
    best: dict[float, float] = {}
    for record in summary.to_dict("records"):
        compression, mean = record["requested_compression"], record["test_accuracy_mean"]
        ci = record["test_accuracy_ci95"]
        text = f"{100 * mean:.2f}" + ("" if math.isnan(ci) else f" $\\pm$ {100 * ci:.2f}")
        cells.setdefault(tuple(record[key] for key in rows), {})[compression] = (mean, text)
        if record["method"] != DENSE and not math.isnan(mean):
            best[compression] = max(best.get(compression, -math.inf), mean)
    compressions = sorted({c for row in cells.values() for c in row})
    columns = [f"{c:g}$\\times$" for c in compressions]
    table = pd.DataFrame(
        [
            [*key, *(row[c][1] if c in row else "" for c in compressions)]
            for key, row in cells.items()
        ],
        columns=[*rows, *columns],
    )
    marked = [
        [
            "textbf:--rwrap;" if key[rows.index("method")] != DENSE and c in row
            and row[c][0] == best.get(c) else ""
            for c in compressions
        ]
        for key, row in cells.items()
    ]  # fmt: skip
    bold = pd.DataFrame([[""] * len(rows) + line for line in marked], columns=table.columns)
    styler = table.style.apply(lambda _: bold, axis=None).hide(axis="index")
    styler = styler.format(escape="latex", subset=rows)
    return styler.to_latex(
        hrules=True, caption=caption, column_format="l" * len(rows) + "r" * len(compressions)
    )


def write_summary(runs: pd.DataFrame, out: str | Path) -> tuple[pd.DataFrame, str]:
    """Write `out/summary.csv` and `out/summary.md` atomically; return the summary and its text."""
    out = Path(out)
    summary = summarize(runs)
    text = summary_markdown(summary)
    atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
    atomic_write_text(out / "summary.md", text)
    return summary, text
