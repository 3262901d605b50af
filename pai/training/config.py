"""How a ticket is trained: the optimizer, schedule and budget, as one hashable config."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

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

    budget: str = "2ep"
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"
    milestones: tuple[str, ...] = ()
    gamma: float = 0.1
    warmup: str = "0it"
    eval_every: str = "1ep"
    augment: bool | None = None  # None: the dataset's default (on for CIFAR)
    seed: int = 0  # seeds the data order; the model's initialization has its own seed

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
