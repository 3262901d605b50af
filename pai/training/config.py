"""How a ticket is trained: the optimizer, schedule and budget, as one hashable config."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from pai.core.errors import PaiError
from pai.core.steps import Step

OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
LR_SCHEDULES: tuple[str, ...] = ("constant", "step", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """How to train: optimizer, schedule and budget. Part of every run's identity (its hash).

    Durations are step strings (`"500it"`, `"2ep"`). `milestones` are the steps where a `step`
    schedule multiplies the learning rate by `gamma`; `warmup` ramps it linearly from 0.
    Fields added later default to None, which changes neither behaviour nor existing hashes.
    """

    budget: str = field(default="2ep", metadata={"help": "training length, e.g. 2ep or 500it"})
    batch_size: int = field(default=128, metadata={"help": "training examples per step"})
    optimizer: str = field(default="sgd", metadata={"choices": OPTIMIZERS})
    lr: float = field(default=0.1, metadata={"help": "learning rate"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum (Adam ignores it)"})
    nesterov: bool = field(
        default=False, metadata={"help": "Nesterov momentum (SGD, momentum > 0)"}
    )
    weight_decay: float = field(default=0.0, metadata={"help": "L2 term added to the gradient"})
    lr_schedule: str = field(default="cosine", metadata={"choices": LR_SCHEDULES})
    milestones: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "comma-separated steps where a 'step' schedule multiplies the lr by gamma, "
            "e.g. 80ep,120ep",
            "metavar": "STEPS",
            "parse": Step.canonical,
        },
    )
    gamma: float = field(default=0.1, metadata={"help": "lr factor at each milestone"})
    warmup: str = field(
        default="0it", metadata={"help": "linear lr warmup, e.g. 500it", "parse": Step.canonical}
    )
    eval_every: str = field(
        default="1ep",
        metadata={"help": "evaluate on the test split every STEP", "parse": Step.canonical},
    )
    augment: bool | None = field(  # None: the dataset's default (on for CIFAR)
        default=None,
        metadata={"help": "random crop and flip on training batches (default: on for CIFAR only)"},
    )
    seed: int = field(  # the model's initialization has its own seed
        default=0, metadata={"help": "seeds the data order"}
    )

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise PaiError(
                f"unknown optimizer {self.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise PaiError(
                f"unknown lr schedule {self.lr_schedule!r}; choose one of: {', '.join(LR_SCHEDULES)}"
            )
        for name in ("lr", "momentum", "weight_decay", "gamma"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise PaiError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.batch_size < 1:
            raise PaiError(f"batch size must be >= 1, got {self.batch_size!r}")
        for name in ("budget", "warmup", "eval_every"):
            Step.parse(getattr(self, name))
        for milestone in self.milestones:
            Step.parse(milestone)
        if Step.parse(self.budget).count < 1:
            raise PaiError(f"training budget must be at least one step, got {self.budget!r}")
        if Step.parse(self.eval_every).count < 1:
            raise PaiError(f"eval_every must be at least one step, got {self.eval_every!r}")

    def replace(self, **changes: object) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return TrainConfig(**values)  # type: ignore[arg-type]
