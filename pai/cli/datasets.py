"""`pai datasets`: the supported datasets, where their files are looked for, and whether found."""

from __future__ import annotations

import argparse

from pai.cli.common import add_data_root


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "datasets",
        help="list datasets, where their files are looked for, and whether they are found",
        description=(
            "List the supported datasets with their input shape, classes and split sizes, the "
            "folder where torchvision's files are looked for, and whether they are there. "
            "Nothing is loaded or downloaded."
        ),
    )
    add_data_root(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from pai.data.loading import dataset_status, resolve_data_root

    rows = [
        {
            "dataset": status.spec.name,
            "input": "x".join(str(size) for size in status.spec.input_shape),
            "classes": status.spec.num_classes,
            "train": status.spec.train_size,
            "test": status.spec.test_size,
            "found": "yes" if status.found else "no",
            "folder": str(status.folder),
        }
        for status in dataset_status(args.data_root)
    ]
    print(f"data root: {resolve_data_root(args.data_root)}")
    print(pd.DataFrame(rows).to_string(index=False))
    return 0
