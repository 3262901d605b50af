"""`pai prune`: prune a freshly initialized zoo model with a scorer and write the mask file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from pai.cli.common import (
    add_data_root,
    add_device,
    add_model_and_dataset,
    add_scoring_arguments,
    compression,
    positive_int,
    scorer_name,
)

if TYPE_CHECKING:
    from pai.pruning.masks import Masks


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prune",
        help="prune a model at initialization and write its masks",
        description=(
            "Build a zoo model from --seed, prune it to --compression with a scorer, print the "
            "per-layer result and write the mask file. Scorers that need data see a fixed, "
            "seeded, un-augmented class-balanced subset of the training split."
        ),
    )
    add_model_and_dataset(parser)
    parser.add_argument(
        "--scorer", required=True, type=scorer_name, help="scorer name (see `pai scorers`)"
    )
    parser.add_argument(
        "--compression",
        type=compression,
        required=True,
        help="prunable weights / kept weights, e.g. 10 keeps 10%%",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds the initialization, data subset and scorer"
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=256,
        help="scoring batch size; the loss is the mean over all examples either way",
    )
    add_scoring_arguments(parser)
    add_data_root(parser)
    add_device(parser)
    parser.add_argument("--out", required=True, type=Path, help="mask file to write (masks.pt)")
    parser.set_defaults(func=run)


def layer_table(masks: Masks) -> list[dict[str, object]]:
    """Layer, shape, kept, total and density (as a percentage) of every masked layer, then the
    total."""
    rows = [
        {
            "layer": name,
            "shape": "x".join(map(str, mask.shape)),
            "kept": int(mask.sum()),
            "total": mask.numel(),
            "density": _percent(int(mask.sum()) / mask.numel()),
        }
        for name, mask in masks.items()
    ]
    total = {"layer": "total", "shape": "", "kept": masks.kept, "total": masks.total}
    return [*rows, {**total, "density": _percent(masks.density)}]


def run(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from pai.core.devices import resolve_device
    from pai.data.loading import load_dataset, scoring_batches
    from pai.models import build_model
    from pai.pruning.driver import check_scores_without_training, prune
    from pai.pruning.registry import get_scorer

    scorer = get_scorer(args.scorer)
    check_scores_without_training(scorer)  # before any dataset is loaded
    device = resolve_device(args.device)
    model = build_model(args.model, args.dataset, seed=args.seed)
    data = None
    if scorer.needs_data:  # only then are dataset files needed
        # read on the CPU: only the subset moves to the scoring device
        train = load_dataset(args.dataset, root=args.data_root, device="cpu").train
        data = scoring_batches(train, args.per_class, args.seed, args.batch_size)
    masks = prune(
        model,
        scorer,
        args.compression,
        data=data,
        rounds=args.rounds,
        schedule=args.schedule,
        scope=args.scope,
        seed=args.seed,
        device=device,
    )
    print(
        f"{args.scorer} on {args.model} ({args.dataset}, seed {args.seed}), {args.scope}: "
        f"compression {masks.compression:.4g} (target {args.compression:g})"
    )
    print(tabulate(layer_table(masks), headers="keys", colalign=("left", "left")))
    masks.save(args.out)
    print(f"wrote {args.out}")
    return 0


def _percent(value: float) -> str:
    """A density as a percentage with 4 significant digits, readable down to 1e-6."""
    return f"{100 * value:.4g}%"
