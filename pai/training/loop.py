"""Masked training: every method's ticket is trained by this one loop, under one budget.

Pruned weights are exactly zero after every optimizer step, whatever the optimizer, momentum
or weight decay: gradients of pruned weights are zeroed before the step (so optimizer state
never accumulates for them) and the weights are multiplied by the mask after it.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from pai.core.errors import PaiError
from pai.pruning.masks import Masks
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


@dataclass
class TrainResult:
    """What a training run measured; `snapshots` maps a step string to a state_dict copy."""

    metrics: dict[str, float | int]
    history: list[dict[str, float | int]]
    snapshots: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    stopped_early: bool = False


# Called after every epoch with (epoch, model); returning True stops training there.
EpochCallback = Callable[[int, nn.Module], bool]


def _autocast(device: torch.device):
    """bf16 autocast on CUDA; a no-op elsewhere (CPU results stay exactly reproducible)."""
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"
    )


@torch.no_grad()
def evaluate(model: nn.Module, split, batch_size: int = 1000) -> tuple[float, float]:
    """Top-1 accuracy in [0, 1] and mean cross-entropy of `model` on a split, in eval mode."""
    was_training = model.training
    model.eval()
    device = split.x.device
    correct = torch.zeros((), dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for x, y in split.eval_batches(batch_size):
        with _autocast(device):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
        correct += (logits.argmax(dim=1) == y).sum()
    model.train(was_training)
    n = len(split)
    return correct.item() / n, loss_sum.item() / n


def lr_multiplier(config: TrainConfig, steps_per_epoch: int, total: int) -> Callable[[int], float]:
    """The learning-rate multiplier at each iteration: warmup, then the schedule."""
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


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
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


def state_copy(model: nn.Module, device: torch.device | str | None = None) -> dict[str, Tensor]:
    """A detached copy of `model`'s state_dict (on `device` if given), safe from later steps."""
    return {k: v.detach().to(device).clone() for k, v in model.state_dict().items()}


def train(
    model: nn.Module,
    data,
    config: TrainConfig,
    *,
    masks: Masks | None = None,
    device: torch.device | str | None = None,
    snapshot_at: tuple[str, ...] = (),
    on_epoch_end: EpochCallback | None = None,
    progress: bool | None = None,
    start_at: str = "0it",
) -> TrainResult:
    """Train `model` in place on `data.train` and evaluate on `data.test`.

    `masks` are enforced before the first step and after every optimizer step. `snapshot_at`
    lists steps (`"0it"`, `"500it"`, `"2ep"`) whose weights are copied into the result, for
    rewinding. `on_epoch_end(epoch, model)` may stop training early by returning True.
    `progress` shows a bar (default: when stderr is a terminal).

    `start_at` = k resumes the budget at step k, as open_lth does after rewinding to step k:
    the learning-rate schedule and the data order are those of a run that began at step 0
    (the first k batches are drawn, augmentation included, and skipped), training stops at the
    same budget, so it takes budget - k steps, and the optimizer's state (momentum, Adam's
    moments) starts empty. History steps count from 0; `steps` and `epochs` in the metrics
    are those trained here, `start_step` is k.

    `initial_train_loss` in the metrics is the loss of the first batch before any update: a
    ticket whose start weights are badly scaled shows it there (GraSP's, at low compression).
    """
    device = torch.device(device) if device is not None else data.train.x.device
    model.to(device)
    masks = masks.to(device) if masks is not None else None
    if masks is not None:
        masks.check_model(model)
        masks.apply(model)
    steps_per_epoch = data.train.num_batches(config.batch_size)
    total = Step.parse(config.budget).iterations(steps_per_epoch)
    eval_every = Step.parse(config.eval_every).iterations(steps_per_epoch)
    snapshot_iterations = {Step.parse(s).iterations(steps_per_epoch): str(s) for s in snapshot_at}
    first = Step.parse(start_at).iterations(steps_per_epoch)
    if first and first >= total:
        raise PaiError(
            f"start step {start_at} leaves nothing to train in the budget {config.budget} "
            f"({total} iterations); allowed: 0 to {total - 1} iterations"
        )
    if first and on_epoch_end is not None:
        raise PaiError("on_epoch_end needs training from step 0; got start_at=" + str(start_at))
    early = [s for it, s in snapshot_iterations.items() if it < first]
    if early:
        raise PaiError(f"snapshot step {early[0]} comes before the start step {start_at}")
    augment = data.spec.augment if config.augment is None else config.augment

    optimizer = _optimizer(model, config)
    multiplier = lr_multiplier(config, steps_per_epoch, total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: multiplier(it + first))
    params = dict(model.named_parameters())
    masked = [(params[n], m.to(params[n].dtype)) for n, m in (masks or {}).items()]
    masked_params = [p for p, _ in masked]
    masked_values = [m for _, m in masked]
    generator = torch.Generator(device=data.train.x.device).manual_seed(config.seed)

    result = TrainResult(metrics={}, history=[])
    start = time.perf_counter()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    loss_count = 0
    last_train_loss = math.nan
    eval_seconds = 0.0
    iteration, epoch = first, 0
    to_skip = first  # batches drawn and skipped so that the data order resumes at step k
    initial_loss = torch.full((), math.nan, dtype=torch.float64, device=device)
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=total - first, disable=not show, unit="it", leave=False, dynamic_ncols=True)

    def record() -> None:
        nonlocal loss_sum, loss_count, last_train_loss, eval_seconds
        if loss_count:
            last_train_loss = loss_sum.item() / loss_count
        eval_start = time.perf_counter()
        accuracy, test_loss = evaluate(model, data.test)
        eval_seconds += time.perf_counter() - eval_start
        result.history.append(
            {
                "step": iteration,
                "epoch": iteration / steps_per_epoch,
                "train_loss": last_train_loss,
                "test_accuracy": accuracy,
                "test_loss": test_loss,
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": time.perf_counter() - start,
            }
        )
        bar.set_postfix(acc=f"{accuracy:.4f}", loss=f"{last_train_loss:.4f}")
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        loss_count = 0

    if first in snapshot_iterations:
        result.snapshots[snapshot_iterations[first]] = state_copy(model)
    model.train()
    try:
        while iteration < total and not result.stopped_early:
            for x, y in data.train.batches(config.batch_size, generator, augment=augment):
                if to_skip:
                    to_skip -= 1
                    continue
                with _autocast(device):
                    loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad(set_to_none=False)
                loss.backward()
                if iteration == first:
                    initial_loss = loss.detach().double()
                if masked:
                    torch._foreach_mul_([p.grad for p in masked_params], masked_values)
                optimizer.step()
                if masked:
                    with torch.no_grad():
                        torch._foreach_mul_(masked_params, masked_values)
                scheduler.step()
                loss_sum += loss.detach().double()
                loss_count += 1
                iteration += 1
                bar.update(1)
                if iteration in snapshot_iterations:
                    result.snapshots[snapshot_iterations[iteration]] = state_copy(model)
                if iteration % eval_every == 0 or iteration == total:
                    record()
                if iteration == total:
                    break
            else:
                epoch += 1
                if on_epoch_end is not None and on_epoch_end(epoch, model):
                    result.stopped_early = True
                    if not result.history or result.history[-1]["step"] != iteration:
                        record()
    finally:
        bar.close()

    final = result.history[-1]
    result.metrics = {
        "test_accuracy": final["test_accuracy"],
        "best_test_accuracy": max(row["test_accuracy"] for row in result.history),
        "test_loss": final["test_loss"],
        "train_loss": final["train_loss"],
        "initial_train_loss": initial_loss.item(),
        "epochs": (iteration - first) / steps_per_epoch,
        "steps": iteration - first,
        "start_step": first,
        "wall_seconds": time.perf_counter() - start,
        "eval_seconds": eval_seconds,
        "density": masks.density if masks is not None else 1.0,
    }
    return result
