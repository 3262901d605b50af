"""`pai stability`: linear mode connectivity of a network's copies against the rewinding step.

Writes into --out: stability.csv (rewind, seed, instability, error_start, error_end,
max_error, ...), path.csv (rewind, seed, alpha, test_error), error_along_path.png,
instability_vs_rewind.png and PROVENANCE.md; runs go to --store (default OUT/runs), and a
rerun trains only what is missing.
"""

from __future__ import annotations

import argparse
import time

from pai.cli.common import add_model_and_dataset, comma_list, compression, positive_int
from pai.cli.train import add_training_arguments, checkpoint_policy, training_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "stability",
        help="linear mode connectivity: instability of two copies against the rewinding step",
        description=(
            "From the dense run's weights at each step k (masked for a sparse network), train "
            "two copies with different data orders to the end of the budget, evaluate the test "
            "error along the straight line between them, and report instability = the largest "
            "error on the line minus the mean of its ends (Frankle et al. 2020)."
        ),
    )
    add_model_and_dataset(parser)
    parser.add_argument(
        "--rewind",
        type=comma_list(),
        default=["0it"],
        metavar="STEPS",
        help="comma-separated steps k the copies start from: 0, 100it, 500it, 2ep (a bare "
        "number counts iterations; default 0)",
    )
    parser.add_argument(
        "--seeds", type=positive_int, default=1, help="seeds --seed, --seed + 1, ... (default 1)"
    )
    parser.add_argument(
        "--points",
        type=positive_int,
        default=11,
        help="evaluation points on each path, both ends included (default 11; the paper: 30)",
    )
    sparse = parser.add_mutually_exclusive_group()
    sparse.add_argument("--masks", default=None, metavar="FILE", help="a mask file (masks.pt)")
    sparse.add_argument(
        "--method", default=None, help="the mask a method finds for each seed (with --compression)"
    )
    parser.add_argument(
        "--compression", type=compression, default=None, help="the method's compression"
    )
    parser.add_argument(
        "--bn-recompute",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="recompute BatchNorm statistics at every point of the path (default: on)",
    )
    parser.add_argument(
        "--bn-batches",
        type=positive_int,
        default=10,
        help="training batches the BatchNorm statistics are recomputed on (default 10)",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="where tables and plots go")
    parser.add_argument(
        "--store", default=None, metavar="DIR", help="run directories (default: OUT/runs)"
    )
    add_training_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pai.core.devices import resolve_device
    from pai.experiments.stability import StabilityConfig, run_stability
    from pai.report.provenance import write_provenance

    started = time.perf_counter()
    config = StabilityConfig(
        model=args.model,
        dataset=args.dataset,
        train=training_config(args),
        rewinds=tuple(dict.fromkeys(args.rewind)),
        seeds=tuple(range(args.seed, args.seed + args.seeds)),
        points=args.points,
        masks=args.masks,
        method=args.method,
        compression=args.compression,
        bn_recompute=args.bn_recompute,
        bn_batches=args.bn_batches,
        train_per_class=args.train_per_class,
    )
    device = resolve_device(args.device)
    table, _ = run_stability(
        config,
        args.out,
        store=args.store,
        data_root=args.data_root,
        device=device,
        checkpoint=checkpoint_policy(args),
    )
    write_provenance(
        args.out,
        args.invocation,
        time.perf_counter() - started,
        device=device,
        notes="Runs finished by an earlier invocation were read from the store, not trained again.",
    )
    summary = table.groupby(["rewind_iterations", "rewind"], sort=True).agg(
        seeds=("seed", "count"),
        instability=("instability", "mean"),
        instability_sd=("instability", "std"),
        error_start=("error_start", "mean"),
        error_end=("error_end", "mean"),
        max_error=("max_error", "mean"),
        dense_error=("dense_error", "mean"),
    )
    print(summary.reset_index().to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"tables and plots in {args.out}")
    return 0
