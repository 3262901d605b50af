"""`pai datasets`: the supported datasets, where their files are looked for, and whether found."""

from __future__ import annotations

import argparse
from pathlib import Path

from pai.cli.common import add_data_root
from pai.core.errors import PaiError

_ROOT_ALLOWED = "give the folder that holds the datasets, or leave --data-root out"


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

    if args.data_root is not None:  # a root given by hand must be a folder that exists
        root = Path(args.data_root)
        if not args.data_root.strip() or not root.exists():
            raise PaiError(f"data root {args.data_root!r} does not exist; {_ROOT_ALLOWED}")
        if not root.is_dir():
            raise PaiError(f"data root {args.data_root!r} is not a folder; {_ROOT_ALLOWED}")

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
