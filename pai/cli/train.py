"""`pai train`: train one zoo model, dense or under a mask file, into the run store."""

from __future__ import annotations

import argparse

from pai.cli.common import (
    add_data_root,
    add_device,
    add_model_and_dataset,
    non_negative_float,
    positive_int,
)
from pai.core.devices import resolve_device
from pai.pruning.masks import Masks
from pai.training.stored import train_run
from pai.core.steps import Step
from pai.training.config import LR_SCHEDULES, OPTIMIZERS, TrainConfig


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The optimizer, schedule and budget flags shared by every command that trains."""
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--epochs", type=positive_int, help="training budget in epochs")
    budget.add_argument("--steps", type=positive_int, help="training budget in iterations")
    defaults = TrainConfig()
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.optimizer)
    parser.add_argument("--lr", type=non_negative_float, default=defaults.lr, help="learning rate")
    parser.add_argument("--momentum", type=non_negative_float, default=defaults.momentum)
    parser.add_argument(
        "--nesterov", action=argparse.BooleanOptionalAction, default=defaults.nesterov
    )
    parser.add_argument("--weight-decay", type=non_negative_float, default=defaults.weight_decay)
    parser.add_argument("--batch-size", type=positive_int, default=defaults.batch_size)
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=defaults.lr_schedule)
    parser.add_argument(
        "--milestones",
        default="",
        metavar="STEPS",
        help="comma-separated steps where a 'step' schedule multiplies the lr by --gamma, e.g. 80ep,120ep",
    )
    parser.add_argument("--gamma", type=non_negative_float, default=defaults.gamma)
    parser.add_argument("--warmup", default=defaults.warmup, help="linear lr warmup, e.g. 500it")
    parser.add_argument(
        "--eval-every", default=defaults.eval_every, help="evaluate on the test split every STEP"
    )
    parser.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random crop and flip on training batches (default: on for CIFAR only)",
    )
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
    add_data_root(parser)
    add_device(parser)


def training_config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig the training flags describe."""
    budget = f"{args.epochs}ep" if args.epochs is not None else f"{args.steps}it"
    milestones = tuple(str(Step.parse(m)) for m in args.milestones.split(",") if m.strip())
    return TrainConfig(
        budget=budget,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        momentum=args.momentum,
        nesterov=args.nesterov,
        weight_decay=args.weight_decay,
        lr_schedule=args.lr_schedule,
        milestones=milestones,
        gamma=args.gamma,
        warmup=str(Step.parse(args.warmup)),
        eval_every=str(Step.parse(args.eval_every)),
        augment=args.augment,
        seed=args.seed,
    )


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
    )
    metrics = run_dir.read_json("metrics.json")
    status = "trained" if ran else "already complete, nothing to do"
    print(
        f"{args.model} on {args.dataset}: test accuracy {metrics['test_accuracy']:.4f}, "
        f"test loss {metrics['test_loss']:.4f}, density {metrics['density']:.4g}, "
        f"{metrics['epochs']:g} epochs ({metrics['steps']} steps) in "
        f"{metrics['wall_seconds']:.1f} s [{status}: {run_dir.path}]"
    )
    return 0
