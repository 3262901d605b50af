"""`pai allocators`: every discovered density allocator, where it comes from, and broken ones."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "allocators",
        help="list the density allocators (--scope)",
        description=(
            "List the density allocators found through the pai.allocators entry-point group "
            "(built-ins and installed plugins): what --scope accepts. An allocator sets each "
            "layer's kept count, the scorer ranks within the layer; global ranks all layers "
            "jointly."
        ),
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from pai.pruning.allocators import SEPARATOR, allocator_entries

    rows = []
    for entry in allocator_entries():
        allocator = entry.plugin
        parameter = None if allocator is None else getattr(allocator, "parameter", None)
        rows.append(
            {
                "scope": f"{entry.name}{SEPARATOR}{parameter}" if parameter else entry.name,
                "ranks": "-"
                if allocator is None
                else ("all layers jointly" if allocator.joint else "within each layer"),
                "package": entry.source,
                "description": allocator.description
                if allocator is not None
                else f"FAILED TO LOAD: {entry.error}",
            }
        )
    if not rows:
        print("no allocators found: is pai installed (pip install -e .)?")
        return 0
    print(tabulate(rows, headers="keys", disable_numparse=True))
    return 0
