"""Accuracy per method and compression, and paired gaps between methods, from compare folders.

Reads OUT/runs.csv and every OUT/scope-*/runs.csv beside it (their rows labelled "method
(scope)"), keeps the tickets themselves (variant `original`), and prints in markdown: the mean
± sample sd of test accuracy in points per method and requested compression, then for each
`--gap A:B` the mean of A - B paired by seed at every compression both have, with its t-based
95% half-width. The numbers the result READMEs quote come from here. Usage:

    python benchmarks/method_gaps.py results/compare-lenet5-fashion-mnist \
        --gap "random (erk):snip" --gap "synflow:snip"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from pai.report.tables import ci95_half_width


def load_tickets(out: Path) -> pd.DataFrame:
    """Every original ticket of `out` and its scope folders, `label` = method (scope)."""
    frames = []
    for path in [out / "runs.csv", *sorted(out.glob("scope-*/runs.csv"))]:
        runs = pd.read_csv(path)
        runs = runs[runs["variant"] == "original"].copy()
        scope = path.parent.name.removeprefix("scope-") if path.parent != out else None
        runs["label"] = runs["method"] if scope is None else runs["method"] + f" ({scope})"
        if scope is not None:
            runs = runs[runs["method"] != "dense"]  # the main table's dense runs, again
        frames.append(runs)
    return pd.concat(frames, ignore_index=True)


def accuracy_table(tickets: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sd (points) per label and requested compression."""
    points = tickets.assign(acc=tickets["test_accuracy"] * 100)
    cells = points.groupby(["label", "requested_compression"])["acc"].agg(["mean", "std"])
    text = cells.apply(lambda r: f"{r['mean']:.2f} ± {r['std']:.2f}", axis=1)
    table = text.unstack("requested_compression").fillna("")
    table.columns = [f"{c:g}x" for c in table.columns]
    order = list(dict.fromkeys(tickets["label"]))
    return table.loc[order]


def gap_table(tickets: pd.DataFrame, gaps: list[str]) -> pd.DataFrame:
    """For each "A:B", the mean and 95% half-width of A - B (points), paired by seed."""
    keyed = tickets.set_index(["label", "requested_compression", "seed"])["test_accuracy"] * 100
    keyed = keyed.sort_index()
    rows = []
    for gap in gaps:
        first, _, second = gap.partition(":")
        for compression in sorted(tickets["requested_compression"].unique()):
            try:
                a, b = (keyed.loc[(name, compression)] for name in (first, second))
            except KeyError:
                continue
            delta = (a - b).dropna()
            if len(delta):
                half = ci95_half_width(delta)
                rows.append({"gap": gap, "compression": f"{compression:g}x",
                             "points": f"{delta.mean():+.2f} ± {half:.2f}", "seeds": len(delta)})  # fmt: skip
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="a compare folder (holding runs.csv)")
    parser.add_argument("--gap", action="append", default=[], help='"A:B": A - B by seed')
    args = parser.parse_args(argv)
    tickets = load_tickets(args.out)
    print(accuracy_table(tickets).to_markdown())
    if args.gap:
        print()
        print(gap_table(tickets, args.gap).to_markdown(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
