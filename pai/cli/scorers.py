"""`pai scorers`: every discovered scorer, where it comes from, and plugins that failed to load."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "scorers",
        help="list the pruning scorers",
        description=(
            "List the scorers found through the pai.scorers entry-point group (built-ins and "
            "installed plugins), with plugins that failed to load and their errors."
        ),
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from pai.pruning.registry import scorer_entries

    rows = []
    for entry in scorer_entries():
        scorer = entry.scorer
        rows.append(
            {
                "name": entry.name,
                "needs data": "-" if scorer is None else ("yes" if scorer.needs_data else "no"),
                "default rounds": "-" if scorer is None else str(scorer.default_rounds),
                "package": entry.source,
                "description": scorer.description
                if scorer is not None
                else f"FAILED TO LOAD: {entry.error}",
            }
        )
    if not rows:
        print("no scorers found: is pai installed (pip install -e .)?")
        return 0
    print(tabulate(rows, headers="keys", disable_numparse=True))
    return 0
