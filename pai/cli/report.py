"""`pai report DIR`: the tables and figures of a comparison or IMP runs, rebuilt from the store.

Nothing is trained: every run directory is read back (`pai.experiments.report`), the tables
in DIR are written again, and the summary is printed as markdown, CSV or LaTeX.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pai.cli.common import comma_list

FORMATS: tuple[str, ...] = ("md", "csv", "latex")
# --by names: a summary row's keys, `compression` being the requested one.
BY_NAMES = {
    "method": "method",
    "variant": "variant",
    "compression": "requested_compression",
    "seed": "seed",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="rebuild a comparison's or IMP run's tables and figures from its stored runs",
        description=(
            "Read every run stored under DIR (a `pai compare` output folder or its store, an "
            "IMP run imp-<hash>/ or a folder of them), training nothing: rebuild runs.csv, "
            "summary.csv, summary.md and accuracy_vs_compression.png (IMP: levels.csv), say how "
            "many runs were found, complete, incomplete and damaged, and print the summary."
        ),
    )
    parser.add_argument("dir", type=Path, metavar="DIR", help="output folder or run store")
    parser.add_argument(
        "--format", choices=FORMATS, default="md", help="how the summary is printed (default md)"
    )
    parser.add_argument(
        "--by",
        type=comma_list(tuple(BY_NAMES)),
        default=None,
        metavar="KEYS",
        help="the keys of a summary row, from method, variant, compression, seed (default "
        "method,variant,compression; a key left out must not vary)",
    )
    parser.add_argument(
        "--setting",
        default=None,
        metavar="ID",
        help="the setting to tabulate when the store holds runs of several trainings (their "
        "ids are listed when it does)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, metavar="FILE", help="write the summary here, not stdout"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pai.core.atomic import atomic_write_text
    from pai.core.errors import PaiError
    from pai.experiments.report import report
    from pai.report.tables import GROUP, summarize, summary_latex, summary_markdown

    result = report(args.dir, setting=args.setting)
    if result.kind != "compare" and args.by is not None:
        raise PaiError(f"--by applies to comparisons, not to a {result.kind} folder")
    if result.kind == "imp":
        text = "".join(_levels_text(name, t, args.format) for name, t in result.tables.items())
    elif result.kind == "collapse":
        text = _levels_text("critical compression", result.tables["summary"], args.format)
    elif "runs" in result.tables:
        by = tuple(BY_NAMES[key] for key in args.by) if args.by else GROUP
        summary = summarize(result.tables["runs"], by)  # a bad --by fails before any output
        if args.format == "latex":
            text = summary_latex(summary, caption=next(iter(result.settings.values()), None))
        elif args.format == "csv":
            text = summary.to_csv(index=False)
        else:
            text = summary_markdown(summary)
    for line in result.lines():
        print(line, file=sys.stderr)
    if result.kind == "compare" and "runs" not in result.tables:
        print("no complete run to tabulate", file=sys.stderr)
        return 1
    if args.out is not None:
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(text, end="")
    return 0


def _levels_text(name: str, table, form: str) -> str:
    """An IMP run's levels or a collapse summary, as markdown (under `name`), CSV or LaTeX."""
    if form == "csv":
        return table.to_csv(index=False)
    if form == "latex":
        return table.style.hide(axis="index").format(precision=4).to_latex(hrules=True)
    return f"{name}\n\n" + table.to_markdown(index=False, floatfmt=".4g") + "\n"
