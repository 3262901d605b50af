"""`pai imp`: iterative magnitude pruning with rewinding, each level stored as its own run.

Writes `<out>/imp-<hash>/`: a directory per level (and per control), levels.csv and
PROVENANCE.md (this command, commit, machine, date, wall time).
"""

from __future__ import annotations

import argparse
import sys
import time

from pai.cli.common import (
    add_model_and_dataset,
    add_scheduler,
    add_stack,
    check_stack,
    comma_list,
    compression_list,
    positive_int,
    pruning_rate,
    scope,
    step,
)
from pai.cli.train import add_training_arguments, checkpoint_policy, training_config
from pai.pruning.criteria import DEFAULT_CRITERION, available_criteria, criterion_entries
from pai.search.choices import CONTROLS, RESETS, REWIND_SCHEDULES


def _whole_number(text: str) -> int:
    """argparse type: a whole number >= 0."""
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return int(text)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "imp",
        help="iterative magnitude pruning (lottery tickets), one stored run per level",
        description=(
            "Train dense, then repeatedly prune the smallest-magnitude live weights, reset the "
            "survivors and train again (Frankle & Carbin 2019). Each level is stored under "
            "OUT/imp-<hash>/level-NN and an interrupted run resumes after its last finished level."
        ),
    )
    add_model_and_dataset(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="run store directory")
    _add_schedule_flags(parser)
    _add_reset_flags(parser)
    parser.add_argument(
        "--controls",
        type=comma_list(CONTROLS),
        default=[],
        metavar="NAMES",
        help="also train, at every level, the same mask re-initialized (reinit) and a random "
        "mask with the same layer densities (shuffle)",
    )
    parser.add_argument(
        "--seeds",
        type=positive_int,
        default=1,
        help="IMP runs for seeds --seed, --seed + 1, ... (default 1), each its own run",
    )
    add_scheduler(parser)
    add_stack(parser)
    add_training_arguments(parser)
    parser.set_defaults(func=run)


def _add_schedule_flags(parser: argparse.ArgumentParser) -> None:
    """How many weights each level keeps: levels, rate, scope, exact targets, output rate."""
    parser.add_argument(
        "--levels", type=_whole_number, default=20, help="pruning levels after the dense one"
    )
    parser.add_argument(
        "--rate",
        type=pruning_rate,
        default=0.2,
        help="fraction of the live weights pruned per level",
    )
    parser.add_argument(
        "--scope",
        type=scope,
        default="global",
        help="density allocator: global (ranked together), layerwise, er, erk, smart-ratio, "
        "from-masks:FILE, or a plugin (see `pai allocators`)",
    )
    parser.add_argument(
        "--output-half-rate",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="prune the output layer at half the rate (as in the LTH paper)",
    )
    parser.add_argument(
        "--targets",
        type=compression_list,
        default=[],
        metavar="C1,C2",
        help="compressions to reach exactly, e.g. 10,100 (a level is added for each)",
    )


def _add_reset_flags(parser: argparse.ArgumentParser) -> None:
    """What survivors are reset to between levels, and by which criterion a level prunes."""
    parser.add_argument(
        "--rewind",
        type=step,
        default="0",
        metavar="STEP",
        help="step of the dense run survivors are reset to: 0, 500 or 500it (iterations), 2ep",
    )
    parser.add_argument(
        "--rewind-schedule",
        choices=REWIND_SCHEDULES,
        default="restart",
        help="after rewinding to step k > 0: train the whole budget from the schedule's start "
        "(restart) or resume the schedule and data order at k for the remaining steps (resume, "
        "as open_lth)",
    )
    parser.add_argument(
        "--reset",
        choices=RESETS,
        default="rewind",
        help="rewind: weights to --rewind; lr-rewind: keep weights, restart the lr schedule; "
        "finetune: keep weights, train at the schedule's final lr",
    )
    parser.add_argument(
        "--criterion",
        choices=available_criteria(),
        default=DEFAULT_CRITERION,
        metavar="NAME",
        help="mask criterion each level prunes by (Zhou et al. 2019), from the start weights "
        "w_i and the trained w_f: "
        + "; ".join(
            f"{entry.name}: {entry.plugin.description}".replace("%", "%%")
            for entry in criterion_entries()
            if entry.plugin is not None
        ),
    )


def run(args: argparse.Namespace) -> int:
    from pai.core.devices import resolve_device
    from pai.experiments.executors import RunsFailed
    from pai.experiments.imp_sweep import run_imp_seeds
    from pai.report.provenance import write_provenance
    from pai.search.imp import ImpConfig

    started = time.perf_counter()
    check_stack(args)
    config = ImpConfig(
        model=args.model,
        dataset=args.dataset,
        train=training_config(args),
        model_seed=args.seed,
        levels=args.levels,
        rate=args.rate,
        scope=args.scope,
        rewind=args.rewind,
        reset=args.reset,
        rewind_schedule=args.rewind_schedule,
        output_half_rate=args.output_half_rate,
        targets=tuple(args.targets),
        controls=tuple(args.controls),
        train_per_class=args.train_per_class,
        criterion=args.criterion,
    )
    # on a cluster the workers choose their device: the client does not touch CUDA
    device = resolve_device(args.device) if args.scheduler is None else args.device
    seeds = range(args.seed, args.seed + args.seeds)
    failed = None
    try:
        results = run_imp_seeds(
            config,
            seeds,
            args.out,
            data_root=args.data_root,
            device=device,
            checkpoint=checkpoint_policy(args),
            scheduler=args.scheduler,
            stack=args.stack,
        )
    except RunsFailed as error:
        failed, results = error, error.result
    for result in results:
        write_provenance(
            result.path,
            args.invocation,
            time.perf_counter() - started,
            device=device,
            notes="Levels finished by an earlier invocation were read from their runs, not "
            "trained again.",
        )
        table = result.table()
        columns = ["level", "kept", "compression", "untrained_test_accuracy", "test_accuracy"]
        columns += ["best_test_accuracy"]
        columns += [f"{c}_test_accuracy" for c in config.controls]
        if len(results) > 1:
            print(f"seed {result.config.model_seed}:")
        print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        print(f"levels: {result.path / 'levels.csv'}")
    if failed is not None:
        print(failed.report(), file=sys.stderr)
        return 1
    return 0
