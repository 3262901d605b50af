"""Arguments and parsers shared by several subcommands."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Collection

from pai.core.errors import PaiError, unknown_name
from pai.data.specs import DATASETS
from pai.pruning.choices import SCHEDULES, SEPARATOR

# The modules that use torch are imported by the functions that need them, so a command's
# `--help` and its argument errors cost no torch import: names are checked against lists read
# without it (entry points, `pai.pruning.choices`, MODEL_NAMES).

# The zoo's model names (`pai.models.MODELS`, which needs torch to import), so `--model` is
# checked at once; tests/test_cli_startup.py checks that the two lists are equal.
MODEL_NAMES: tuple[str, ...] = (
    "lenet300", "lenet5", "conv2", "conv4", "conv6", "vgg11", "vgg16", "vgg19",
    "resnet20", "resnet32", "resnet56", "resnet18",
)  # fmt: skip


def name_of(kind: str, allowed: Callable[[], Collection[str]]) -> Callable[[str], str]:
    """argparse type: a name among `allowed()` (read when a value is parsed), else the error
    naming the allowed ones."""

    def parse(text: str) -> str:
        names = allowed()
        if text not in names:
            raise argparse.ArgumentTypeError(str(unknown_name(kind, text, names)))
        return text

    parse.__name__ = kind  # how argparse names the type in its own messages
    return parse


def _scorer_names() -> list[str]:
    # pai.core.plugins reads the distributions' metadata: imported only to check a name
    from pai.core.plugins import SCORERS, declared_names

    return declared_names(SCORERS)


model_name = name_of("model", lambda: MODEL_NAMES)
dataset_name = name_of("dataset", lambda: DATASETS)
scorer_name = name_of("scorer", _scorer_names)


def add_model_and_dataset(parser: argparse.ArgumentParser) -> None:
    """`--model M --dataset D`, both required."""
    parser.add_argument(
        "--model", required=True, type=model_name, help="zoo model name (see `pai models`)"
    )
    parser.add_argument(
        "--dataset",
        required=True,
        type=dataset_name,
        help="dataset the model is shaped for (see `pai datasets`)",
    )


def add_scoring_arguments(parser: argparse.ArgumentParser, *, rounds: bool = True) -> None:
    """`--scope`, `--per-class` and, with `rounds`, `--rounds` and `--schedule` for pruning."""
    parser.add_argument(
        "--scope",
        type=scope,
        default="global",
        help="density allocator: global (rank all layers together), layerwise, er, erk, "
        "smart-ratio, from-masks:FILE, ... (see `pai allocators`)",
    )
    if rounds:
        parser.add_argument(
            "--rounds",
            type=positive_int,
            default=None,
            help="pruning rounds (default: each scorer's own, e.g. SynFlow 100)",
        )
        parser.add_argument("--schedule", choices=SCHEDULES, default="exponential")
    parser.add_argument(
        "--per-class",
        type=positive_int,
        default=10,
        help="training examples per class in the scoring batch of scorers that need data "
        "(default 10)",
    )


def add_data_root(parser: argparse.ArgumentParser) -> None:
    """`--data-root DIR` (else $PAI_DATA_ROOT, else the per-user cache)."""
    parser.add_argument(
        "--data-root",
        default=None,
        metavar="DIR",
        help="where datasets are looked for (default: $PAI_DATA_ROOT, else ~/.cache/pai/data)",
    )


def add_scheduler(parser: argparse.ArgumentParser) -> None:
    """`--scheduler`: run one task per run on a dask.distributed cluster."""
    parser.add_argument(
        "--scheduler",
        default=None,
        metavar="WHERE",
        help="run one task per run on dask.distributed: local:N (a LocalCluster of N worker "
        "processes here), tcp://host:port (a running scheduler) or a scheduler file; the "
        "store and data root must be paths every worker sees (default: this process)",
    )


def add_stack(parser: argparse.ArgumentParser) -> None:
    """`--stack K`: how many runs of the architecture train side by side in one loop."""
    parser.add_argument(
        "--stack",
        type=positive_int,
        default=None,
        metavar="K",
        help="train up to K runs that differ only in seed, mask or start weights in one "
        "stacked loop (pai.train_many), each exactly as alone; 1 trains one run at a time "
        "(default: chosen by the device: on CUDA what the free memory holds, up to 64; on a "
        "CPU 4 for nets without convolutions, 1 for conv nets); runs in a stack do not "
        "checkpoint: a kill loses the stack in progress, every finished run is kept",
    )


def check_stack(args: argparse.Namespace) -> None:
    """PaiError for `--stack K > 1` with `--scheduler`: a cluster's task is one run."""
    if args.stack not in (None, 1) and args.scheduler is not None:
        raise PaiError(
            f"--stack {args.stack} stacks runs in this process; with --scheduler every run is "
            "its own task: drop --stack (or give --stack 1)"
        )


def add_device(parser: argparse.ArgumentParser) -> None:
    """`--device` (default: cuda when available, else cpu)."""
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available)")


def scope(text: str) -> str:
    """argparse type: a declared density allocator's name, or `name:ARGUMENT` for one that
    takes an argument (`from-masks:FILE`, whose file is read here). A bare name is checked
    against the entry points alone; the run resolves it (and says if it needs an argument)."""
    from pai.core.plugins import ALLOCATORS, declared_names

    name, separator, _ = text.partition(SEPARATOR)
    names = declared_names(ALLOCATORS)
    if name not in names:
        raise argparse.ArgumentTypeError(str(unknown_name("scope", name, names)))
    if separator:
        from pai.pruning.allocators import resolve_allocator

        try:
            resolve_allocator(text)
        except PaiError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return text


def step(text: str) -> str:
    """argparse type: a training step (`0`, `500`, `500it`, `2ep`), canonical."""
    from pai.core.steps import Step

    try:
        return Step.canonical(text)
    except PaiError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return value


def compression(text: str) -> float:
    """argparse type: a compression ratio >= 1 (10 means 90% of weights pruned)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 1:
        raise argparse.ArgumentTypeError(f"compression {text!r} must be a finite number >= 1")
    return value


def comma_list(choices: tuple[str, ...] | None = None):
    """argparse type: a comma-separated list, each item checked against `choices` if given."""

    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError("expected a comma-separated list, got nothing")
        if choices is not None:
            bad = [item for item in items if item not in choices]
            if bad:
                raise argparse.ArgumentTypeError(
                    f"unknown value(s) {', '.join(bad)}; choose from: {', '.join(choices)}"
                )
        return items

    return parse


def compression_list(text: str) -> list[float]:
    """argparse type: comma-separated compression ratios, each >= 1, e.g. 10,100."""
    return [compression(item) for item in comma_list()(text)]


def pruning_rate(text: str) -> float:
    """argparse type: a fraction strictly between 0 and 1."""
    value = non_negative_float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"rate {text!r} must be between 0 and 1 (exclusive)")
    return value
