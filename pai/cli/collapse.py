"""`pai collapse`: critical compression of pruning-at-initialization scorers (SynFlow Fig. 1).

The experiment is `pai.experiments.collapse`; its flags are the fields of `CollapseConfig`.
Writes into --out: collapse.csv (one row per scorer and seed), collapse.md (mean and sd per
scorer), layer_density.png, alive_layers.png, PROVENANCE.md (this command, commit, machine,
date, wall time) and, with --compressions, fixed_compressions.csv.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pai.cli.common import (
    add_data_root,
    add_device,
    add_model_and_dataset,
    add_scheduler,
    add_scoring_arguments,
)
from pai.cli.flags import add_dataclass_flags, dataclass_values
from pai.experiments.collapse_config import CollapseConfig

# Fields whose flags are shared with other commands (add_model_and_dataset, add_scoring_arguments).
_SHARED_FIELDS = ("model", "dataset", "scope", "rounds", "schedule", "per_class")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "collapse",
        help="critical compression (layer collapse) of scorers at initialization",
        description=(
            "For each scorer and seed, find the largest compression at which no prunable layer "
            "is empty (or, with --criterion path, input and output stay connected), beside the "
            "bound N/L. Every scorer prunes the same seeded model; scorers that need data share "
            "one seeded class-balanced batch per seed. Writes collapse.csv, collapse.md, "
            "layer_density.png and alive_layers.png into --out."
        ),
    )
    add_model_and_dataset(parser)
    parser.add_argument("--out", required=True, type=Path, help="folder for the table and figures")
    add_dataclass_flags(parser, CollapseConfig, exclude=_SHARED_FIELDS)
    add_scoring_arguments(parser)
    add_data_root(parser)
    add_device(parser)
    add_scheduler(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    config = CollapseConfig(**dataclass_values(args, CollapseConfig))  # checked without torch
    from pai.core.devices import resolve_device
    from pai.experiments.collapse import run_collapse
    from pai.experiments.executors import RunsFailed
    from pai.report.provenance import write_provenance

    # on a cluster the workers choose their device: the client does not touch CUDA
    device = resolve_device(args.device) if args.scheduler is None else args.device
    failed = None
    try:
        summary = run_collapse(
            config, args.out, data_root=args.data_root, device=device, scheduler=args.scheduler
        )
    except RunsFailed as error:
        if error.result is None:
            print(error.report(), file=sys.stderr)
            return 1
        failed, summary = error, error.result
    write_provenance(args.out, args.invocation, time.perf_counter() - started, device=device)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    written = "collapse.csv, collapse.md, layer_density.png, alive_layers.png, PROVENANCE.md"
    fixed = ", fixed_compressions.csv" if config.compressions else ""
    print(f"wrote {args.out}/{written}{fixed}")
    if failed is not None:
        print(failed.report(), file=sys.stderr)
        return 1
    return 0
