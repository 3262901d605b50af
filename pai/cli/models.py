"""`pai models`: the zoo, with parameter counts for a dataset's input shape."""

from __future__ import annotations

import argparse

from pai.data.specs import DATASETS, dataset_spec


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the model zoo",
        description="List the zoo models with their parameter counts for a dataset's shape.",
    )
    parser.add_argument(
        "--dataset",
        default="cifar10",
        choices=list(DATASETS),
        help="shape the counts for this dataset",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from tabulate import tabulate

    from pai.models import MODELS
    from pai.pruning.masks import prunable_parameters

    spec = dataset_spec(args.dataset)
    rows = []
    for name, info in MODELS.items():
        with torch.device("meta"):  # counts need shapes only: build without allocating weights
            model = info.build(spec.input_shape, spec.num_classes)
        prunable = prunable_parameters(model)
        rows.append(
            {
                "model": name,
                "parameters": sum(p.numel() for p in model.parameters()),
                "prunable": sum(p.numel() for p in prunable.values()),
                "prunable layers": len(prunable),
                "description": info.description,
            }
        )
    shape = "x".join(map(str, spec.input_shape))
    print(
        f"Parameter counts for {spec.name} ({shape}, {spec.num_classes} classes). "
        f"Every model builds for: {', '.join(DATASETS)}."
    )
    print(tabulate(rows, headers="keys", intfmt=","))
    return 0
