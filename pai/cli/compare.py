"""`pai compare`: every method's ticket trained under one budget, one row per run.

Writes into --out: runs.csv (one row per run), summary.csv and summary.md (mean, sd and n over
seeds per method, variant and compression), accuracy_vs_compression.png and PROVENANCE.md (this
command, commit, machine, date, wall time); run directories go to --store (default OUT/runs). A
rerun trains only the runs not yet complete.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

from pai.cli.common import (
    add_model_and_dataset,
    add_scheduler,
    add_scoring_arguments,
    add_stack,
    check_stack,
    comma_list,
    compression_list,
    positive_int,
)
from pai.cli.flags import add_dataclass_flags, dataclass_values
from pai.cli.train import add_training_arguments, checkpoint_policy, training_config
from pai.core.errors import PaiError
from pai.experiments.compare.config import CompareConfig
from pai.report.schema import check_variant
from pai.search.methods import method_names, options_class

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="train every method's ticket under one budget and tabulate them",
        description=(
            "Find each method's ticket at each compression and seed, train them all with the "
            "same budget, and write runs.csv, summary.md and accuracy_vs_compression.png. "
            "A method's options are --<method>-<option> flags, listed below by method."
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
        "--variants",
        type=variant_list,
        default=[],
        help="variants of every ticket to add as rows: the sanity checks shuffle, reinit, "
        "invert (Frankle et al. 2021); sign_constant, freeze_init (Zhou et al. 2019); "
        "signs_from_init, magnitudes_from_init, sign_flip, permute_global, permute_layer, "
        "permute_filter, permute_same_sign, noise:SCALE (Frankle, Schwab & Morcos 2020)",
    )
    add_scoring_arguments(parser, rounds=False)
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="train this many seeds at once in worker processes, each with cpu_count/jobs "
        "torch threads (for many-core CPUs; default 1)",
    )
    add_scheduler(parser)
    add_stack(parser)
    add_training_arguments(parser)
    parser.set_defaults(func=run, methods_with_flags=add_method_options(parser))


def variant_list(text: str) -> list[str]:
    """argparse type: comma-separated variant names (`pai.report.schema.VARIANTS`)."""
    try:
        return [check_variant(item) for item in comma_list()(text)]
    except PaiError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _prefix(method: str) -> str:
    return method.replace("_", "-")


def add_method_options(parser: argparse.ArgumentParser) -> tuple[str, ...]:
    """`--<method>-<option>` flags for every method that declares options (`pai.options`
    entry points, read without loading the method), one group per method; the methods that got
    them. A method whose options cannot be flags (a type no flag holds, a flag taken already,
    a class that fails to load) is left out with a warning: it runs with its default options."""
    added = []
    for name in method_names():
        try:
            options = options_class(name)
            if options is None:
                continue
            group = parser.add_argument_group(f"options of method {name}")
            add_dataclass_flags(group, options, prefix=_prefix(name))
        except PaiError as error:
            log.warning("method %r: its options are not command-line flags: %s", name, error)
            continue
        added.append(name)
    return tuple(added)


def method_options(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The options of the selected methods (field name -> value), from their flags; each set is
    checked by its class here, so a bad value is refused before any method loads."""
    options = {}
    for name in dict.fromkeys(args.methods):
        if name in args.methods_with_flags:
            cls = options_class(name)
            options[name] = dataclass_values(args, cls, prefix=_prefix(name))
            cls(**options[name])  # PaiError naming the bad value
    return options


def compare_config(args: argparse.Namespace) -> CompareConfig:
    """The CompareConfig the flags describe (a method, compression or check given twice is
    refused by CompareConfig)."""
    return CompareConfig(
        model=args.model,
        dataset=args.dataset,
        methods=tuple(args.methods),
        compressions=tuple(args.compressions),
        train=training_config(args),
        seeds=tuple(range(args.seed, args.seed + args.seeds)),
        sanity=tuple(args.sanity),
        scope=args.scope,
        per_class=args.per_class,
        train_per_class=args.train_per_class,
        options=method_options(args),
    )


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    check_stack(args)
    config = compare_config(args)  # every name and number checked before torch is imported
    from pai.core.devices import resolve_device
    from pai.experiments.compare.run import run_comparison
    from pai.experiments.executors import RunsFailed
    from pai.report.provenance import write_provenance
    from pai.report.tables import summarize, summary_markdown

    # on a cluster the workers choose their device: the client does not touch CUDA
    device = resolve_device(args.device) if args.scheduler is None else args.device
    failed = None
    try:
        table = run_comparison(
            config,
            args.out,
            store=args.store,
            data_root=args.data_root,
            device=device,
            jobs=args.jobs,
            scheduler=args.scheduler,
            checkpoint=checkpoint_policy(args),
            stack=args.stack,
        )
    except RunsFailed as error:
        failed, table = error, error.result
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
    if failed is not None:
        print(failed.report(), file=sys.stderr)
        return 1
    return 0
