"""`pai compare`: every method's ticket trained under one budget, one row per run.

Writes into --out: runs.csv (one row per run), summary.csv and summary.md (mean, sd and n over
seeds per method, variant and compression), accuracy_vs_compression.png and PROVENANCE.md (this
command, commit, machine, date, wall time); run directories go to --store (default OUT/runs). A
rerun trains only the runs not yet complete.
"""

from __future__ import annotations

import argparse
import time

from pai.cli.common import (
    add_model_and_dataset,
    add_scoring_arguments,
    comma_list,
    compression_list,
    non_negative_float,
    positive_int,
    pruning_rate,
)
from pai.cli.train import add_training_arguments, training_config
from pai.experiments.compare import CompareConfig, run_comparison
from pai.report.schema import SANITY_CHECKS
from pai.core.devices import resolve_device
from pai.report.provenance import write_provenance
from pai.core.steps import Step
from pai.report.tables import summarize, summary_markdown

EARLYBIRD = "earlybird"  # the scorer the --eb-* flags configure
EB_MODES = ("magnitude", "bn-channel")
EB_RESTARTS = ("trained", "init")


def _epsilon(text: str) -> float:
    """argparse type: an early-bird distance threshold in (0, 1]."""
    value = non_negative_float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"epsilon {text!r} must be in (0, 1]")
    return value


def _step(text: str) -> str:
    """argparse type: a step such as 0, 500it or 2ep (a bare number counts iterations)."""
    try:
        return Step.canonical(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="train every method's ticket under one budget and tabulate them",
        description=(
            "Find each method's ticket at each compression and seed, train them all with the "
            "same budget, and write runs.csv, summary.md and accuracy_vs_compression.png."
        ),
    )
    add_model_and_dataset(parser)
    parser.add_argument(
        "--methods",
        type=comma_list(),
        required=True,
        help="comma-separated: registered scorers (see `pai scorers`) and imp",
    )
    parser.add_argument(
        "--compressions",
        type=compression_list,
        required=True,
        help="comma-separated compression ratios, e.g. 2,4,8,16 (10 keeps 10%% of the weights)",
    )
    parser.add_argument(
        "--seeds", type=positive_int, default=1, help="seeds --seed, --seed + 1, ... (default 1)"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="where tables and plot go")
    parser.add_argument(
        "--store", default=None, metavar="DIR", help="run directories (default: OUT/runs)"
    )
    parser.add_argument(
        "--sanity",
        type=comma_list(SANITY_CHECKS),
        default=[],
        help="sanity checks to add as rows: shuffle, reinit, invert (Frankle et al. 2021)",
    )
    add_scoring_arguments(parser, rounds=False)
    parser.add_argument(
        "--imp-rate",
        type=pruning_rate,
        default=0.2,
        help="IMP's pruning rate per level between the targets (default 0.2)",
    )
    parser.add_argument(
        "--rewind", type=_step, default="0it", help="IMP's rewinding step: 0, 500it, 2ep"
    )
    parser.add_argument(
        "--eb-epsilon",
        type=_epsilon,
        default=0.1,
        help="early-bird: stop when the last 4 successive mask distances are all below this",
    )
    parser.add_argument(
        "--eb-restart",
        choices=EB_RESTARTS,
        default="trained",
        help="early-bird ticket weights: those at the stopping point, or the initial ones",
    )
    parser.add_argument(
        "--eb-mode", choices=EB_MODES, default="magnitude", help="early-bird mask criterion"
    )
    parser.add_argument(
        "--eb-max-epochs",
        type=positive_int,
        default=None,
        help="early-bird: stop searching after this many epochs (default: the budget)",
    )
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="train this many seeds at once in worker processes, each with cpu_count/jobs "
        "torch threads (for many-core CPUs; default 1)",
    )
    add_training_arguments(parser)
    parser.set_defaults(func=run)


def compare_config(args: argparse.Namespace) -> CompareConfig:
    """The CompareConfig the flags describe (repeated methods, compressions, checks once)."""
    options = {}
    if "imp" in args.methods:
        options["imp"] = {"rate": args.imp_rate, "rewind": args.rewind}
    if EARLYBIRD in args.methods:
        options[EARLYBIRD] = {
            "epsilon": args.eb_epsilon,
            "restart": args.eb_restart,
            "mode": args.eb_mode,
            "max_epochs": args.eb_max_epochs,
        }
    return CompareConfig(
        model=args.model,
        dataset=args.dataset,
        methods=tuple(dict.fromkeys(args.methods)),
        compressions=tuple(dict.fromkeys(args.compressions)),
        train=training_config(args),
        seeds=tuple(range(args.seed, args.seed + args.seeds)),
        sanity=tuple(dict.fromkeys(args.sanity)),
        scope=args.scope,
        per_class=args.per_class,
        train_per_class=args.train_per_class,
        options=options,
    )


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    config = compare_config(args)
    device = resolve_device(args.device)
    table = run_comparison(
        config,
        args.out,
        store=args.store,
        data_root=args.data_root,
        device=device,
        jobs=args.jobs,
    )
    write_provenance(
        args.out,
        args.invocation,
        time.perf_counter() - started,
        device=device,
        notes=f"runs.csv holds {len(table)} complete runs; runs finished by an earlier "
        "invocation were read from the store, not trained again.",
    )
    if table.empty:
        print("no run finished")
        return 1
    print(summary_markdown(summarize(table)), end="")
    print(f"tables and figure in {args.out}")
    return 0
