"""`pai train`: train one zoo model, dense or under a mask file, into the run store."""

from __future__ import annotations

import argparse

from pai.cli.common import add_data_root, add_device, add_model_and_dataset, positive_int
from pai.cli.flags import add_dataclass_flags, dataclass_values
from pai.training.checkpoint import DEFAULT_EVERY, CheckpointPolicy
from pai.training.config import TrainConfig

# Flags of their own: the budget is --epochs or --steps, and --seed seeds the initialization too.
_OWN_FLAGS = ("budget", "seed")


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The optimizer, schedule and budget flags shared by every command that trains: the fields
    of `TrainConfig`, with the budget given as --epochs E or --steps S."""
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--epochs", type=positive_int, help="training budget in epochs")
    budget.add_argument("--steps", type=positive_int, help="training budget in iterations")
    add_dataclass_flags(parser, TrainConfig, exclude=_OWN_FLAGS)
    parser.add_argument(
        "--train-per-class",
        type=positive_int,
        default=None,
        metavar="N",
        help="train (and search) on a fixed class-balanced subset of N examples per class",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds the initialization and data order"
    )
    parser.add_argument(
        "--checkpoint-every",
        type=_checkpoint_every,
        default=DEFAULT_EVERY,
        metavar="STEP",
        help="save each run's training state every STEP (e.g. 500it, 1ep; off: never), so a "
        f"killed run resumes from it (default {DEFAULT_EVERY}; not part of a run's identity)",
    )
    parser.add_argument(
        "--keep-checkpoint",
        action="store_true",
        help="keep checkpoint.pt in a finished run (default: deleted when the run completes)",
    )
    add_data_root(parser)
    add_device(parser)


def _checkpoint_every(text: str) -> str | None:
    """argparse type: a step such as 500it or 1ep (a bare number counts iterations); off or 0
    for no checkpoints."""
    if text.strip().lower() in ("off", "0", "0it", "0ep"):
        return None
    try:
        return CheckpointPolicy(text).every
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def checkpoint_policy(args: argparse.Namespace) -> CheckpointPolicy | None:
    """The checkpointing the flags ask for (None: --checkpoint-every off)."""
    if args.checkpoint_every is None:
        return None
    return CheckpointPolicy(args.checkpoint_every, keep=args.keep_checkpoint)


def training_config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig the training flags describe."""
    budget = f"{args.epochs}ep" if args.epochs is not None else f"{args.steps}it"
    values = dataclass_values(args, TrainConfig, exclude=_OWN_FLAGS)
    return TrainConfig(budget=budget, seed=args.seed, **values)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model, dense or under a mask",
        description="Train a zoo model (dense, or with a mask file) and store the run in --out.",
    )
    add_model_and_dataset(parser)
    parser.add_argument("--masks", default=None, metavar="FILE", help="mask file (masks.pt)")
    parser.add_argument("--out", required=True, metavar="DIR", help="run store directory")
    add_training_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pai.core.devices import resolve_device
    from pai.core.store import FILES
    from pai.pruning.masks import Masks
    from pai.training.stored import train_run

    config = training_config(args)
    masks = Masks.load(args.masks) if args.masks else None
    run_dir, ran = train_run(
        args.model,
        args.dataset,
        config,
        args.out,
        model_seed=args.seed,
        masks=masks,
        train_per_class=args.train_per_class,
        data_root=args.data_root,
        device=resolve_device(args.device),
        checkpoint=checkpoint_policy(args),
    )
    metrics = run_dir.read_json(FILES.metrics)
    status = "trained" if ran else "already complete, nothing to do"
    if ran and metrics.get("resumed_from_step"):
        status = f"resumed from the checkpoint at step {metrics['resumed_from_step']}"
    print(
        f"{args.model} on {args.dataset}: test accuracy {metrics['test_accuracy']:.4f}, "
        f"test loss {metrics['test_loss']:.4f}, density {metrics['density']:.4g}, "
        f"{metrics['epochs']:g} epochs ({metrics['steps']} steps) in "
        f"{metrics['wall_seconds']:.1f} s [{status}: {run_dir.path}]"
    )
    return 0
