"""The optimizer and its learning-rate schedule, built from a `TrainConfig`."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from pai.core.steps import Step
from pai.training.config import TrainConfig


def lr_multiplier(config: TrainConfig, steps_per_epoch: int, total: int) -> Callable[[int], float]:
    """The learning-rate multiplier at each iteration: warmup, then the schedule.

    Warmup over w iterations scales iteration `it` by min(1, (it + 1) / w). `step` then
    multiplies by gamma once per milestone reached (it >= milestone); `cosine` by
    (1 + cos(pi * min(it, total) / total)) / 2, reaching 0 at `total`; `constant` by 1.
    """
    warmup = Step.parse(config.warmup).iterations(steps_per_epoch)
    milestones = sorted(Step.parse(m).iterations(steps_per_epoch) for m in config.milestones)

    def factor(it: int) -> float:
        scale = min(1.0, (it + 1) / warmup) if warmup else 1.0
        if config.lr_schedule == "step":
            scale *= config.gamma ** sum(it >= m for m in milestones)
        elif config.lr_schedule == "cosine":
            scale *= 0.5 * (1 + math.cos(math.pi * min(it, total) / total))
        return scale

    return factor


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov) or Adam over `model`'s trainable parameters.

    Nesterov applies only with momentum > 0, where torch defines it.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params,
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov and config.momentum > 0,
        weight_decay=config.weight_decay,
    )


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    steps_per_epoch: int,
    total: int,
    first: int = 0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule of a run that began at step 0, entered at iteration `first` (a resume)."""
    multiplier = lr_multiplier(config, steps_per_epoch, total)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: multiplier(it + first))
