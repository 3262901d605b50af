"""Masked training: every method's ticket is trained by this one loop, under one budget.

Pruned weights are exactly zero after every optimizer step, whatever the optimizer, momentum
or weight decay (`MaskedStep`). The schedule and optimizer come from `schedule`, the record of
losses, evaluations and metrics from `history`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from pai.core.errors import PaiError
from pai.core.steps import Step
from pai.core.store import canonical
from pai.pruning.masks import Masks
from pai.training.checkpoint import Checkpointing, load_checkpoint, save_checkpoint, state_digest
from pai.training.config import TrainConfig
from pai.training.history import History
from pai.training.masked_step import MaskedStep, hold_frozen
from pai.training.schedule import make_optimizer, make_scheduler

log = logging.getLogger(__name__)


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
    checkpoint: Checkpointing | None = None,
    frozen: Mapping[str, Tensor] | None = None,
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

    `checkpoint` saves the training state every `checkpoint.every` steps into
    `checkpoint.path` (`pai.training.checkpoint`); a valid checkpoint found there is resumed
    from, and the run ends bit-identical to an uninterrupted one on the same device. The
    metrics then count the whole run (`steps`, `wall_seconds` over every attempt);
    `resumed_from_step` is the step resumed from (0: none) and `attempt_steps` the steps
    this call trained. A callback's state cannot be saved, so `on_epoch_end` excludes it.

    `frozen` (one tensor per mask) holds the pruned weights at those values instead of zero,
    before the first step and after every step (`MaskedStep`).
    """
    device = torch.device(device) if device is not None else data.train.x.device
    model.to(device)
    masks = masks.to(device) if masks is not None else None
    if masks is not None:
        masks.check_model(model)
        masks.apply(model)
        if frozen is not None:
            hold_frozen(model, masks, frozen)
    if checkpoint is not None and on_epoch_end is not None:
        raise PaiError("on_epoch_end keeps state a checkpoint cannot hold; pass checkpoint=None")
    plan = _plan(data, config, snapshot_at, start_at, on_epoch_end)
    saver = None
    if checkpoint is not None:
        saver = _Checkpointer(checkpoint, plan, _fingerprint(model, data, config, plan, masks))
    return _loop(model, data, config, plan, masks, device, on_epoch_end, progress, saver, frozen)


@dataclass(frozen=True)
class _Plan:
    """A run's budget in iterations, where it starts, and what it snapshots."""

    steps_per_epoch: int
    total: int
    eval_every: int
    first: int  # the start step; batches before it are drawn and skipped
    snapshots: dict[int, str]  # iteration -> the step string it was asked for as
    augment: bool


def _plan(
    data,
    config: TrainConfig,
    snapshot_at: tuple[str, ...],
    start_at: str,
    on_epoch_end: EpochCallback | None,
) -> _Plan:
    """The run's steps in iterations, after checking that start, snapshots and callback fit."""
    steps_per_epoch = data.train.num_batches(config.batch_size)
    total = Step.parse(config.budget).iterations(steps_per_epoch)
    eval_every = Step.parse(config.eval_every).iterations(steps_per_epoch)
    snapshots = {Step.parse(s).iterations(steps_per_epoch): str(s) for s in snapshot_at}
    first = Step.parse(start_at).iterations(steps_per_epoch)
    if first and first >= total:
        raise PaiError(
            f"start step {start_at} leaves nothing to train in the budget {config.budget} "
            f"({total} iterations); allowed: 0 to {total - 1} iterations"
        )
    if first and on_epoch_end is not None:
        raise PaiError("on_epoch_end needs training from step 0; got start_at=" + str(start_at))
    early = [s for it, s in snapshots.items() if it < first]
    if early:
        raise PaiError(f"snapshot step {early[0]} comes before the start step {start_at}")
    augment = data.spec.augment if config.augment is None else config.augment
    return _Plan(steps_per_epoch, total, eval_every, first, snapshots, augment)


def _fingerprint(model: nn.Module, data, config: TrainConfig, plan: _Plan, masks) -> dict:
    """What a checkpoint must match to be resumed: the training asked for, exactly."""
    return {
        "train": canonical(config),
        "plan": [plan.steps_per_epoch, plan.total, plan.first, plan.augment],
        "snapshots": sorted(plan.snapshots),
        "examples": len(data.train),
        "device": data.train.x.device.type,
        "start": state_digest(model.state_dict(), masks or {}),
    }


@dataclass
class _Position:
    """Where a run is: the step, the epoch, the batches drawn in this epoch and the batch
    generator's state when the epoch began (its permutation and augmentations follow from it)."""

    iteration: int
    epoch: int = 0
    drawn: int = 0
    epoch_state: Tensor | None = None


@dataclass(frozen=True)
class _Parts:
    """What a checkpoint saves besides the position."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    history: History
    snapshots: dict[str, dict[str, Tensor]]


class _Checkpointer:
    """Saves the loop's state every `every` steps and restores it (`pai.training.checkpoint`)."""

    def __init__(self, checkpoint: Checkpointing, plan: _Plan, fingerprint: dict):
        self.path = checkpoint.path
        self.every = Step.parse(checkpoint.every).iterations(plan.steps_per_epoch)
        self.total = plan.total
        self.fingerprint = fingerprint

    def due(self, iteration: int) -> bool:
        return iteration % self.every == 0 and iteration < self.total

    def save(self, parts: _Parts, position: _Position, device: torch.device) -> None:
        state = {
            "model": parts.model.state_dict(),
            "optimizer": parts.optimizer.state_dict(),
            "scheduler": parts.scheduler.state_dict(),
            "history": parts.history.state(),
            "snapshots": parts.snapshots,
            "position": [position.iteration, position.epoch, position.drawn],
            "generator": position.epoch_state,
            "rng": _global_rng_state(device),
        }
        save_checkpoint(self.path, self.fingerprint, state)

    def restore(self, parts: _Parts, device: torch.device) -> _Position | None:
        """Load the saved state into `parts`; the position to continue from (None: no
        valid checkpoint, start from the beginning)."""
        state = load_checkpoint(self.path, self.fingerprint, device)
        if state is None:
            return None
        parts.model.load_state_dict(state["model"])
        parts.optimizer.load_state_dict(state["optimizer"])
        parts.scheduler.load_state_dict(state["scheduler"])
        parts.history.restore(state["history"])
        parts.snapshots.update(state["snapshots"])
        _set_global_rng_state(state["rng"], device)
        iteration, epoch, drawn = state["position"]
        return _Position(iteration, epoch, drawn, state["generator"].cpu())


def _global_rng_state(device: torch.device) -> list[Tensor]:
    """torch's global CPU generator (and the device's CUDA one): pai draws nothing from them,
    but a model's own dropout would."""
    states = [torch.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states


def _set_global_rng_state(states: list[Tensor], device: torch.device) -> None:
    torch.set_rng_state(states[0].cpu())
    if device.type == "cuda" and len(states) > 1:
        torch.cuda.set_rng_state(states[1].cpu(), device)


def _loop(
    model: nn.Module,
    data,
    config: TrainConfig,
    plan: _Plan,
    masks: Masks | None,
    device: torch.device,
    on_epoch_end: EpochCallback | None,
    progress: bool | None,
    saver: _Checkpointer | None = None,
    frozen: Mapping[str, Tensor] | None = None,
) -> TrainResult:
    """Train from `plan.first` (or the checkpoint) to `plan.total`, evaluating, snapshotting,
    checkpointing and stopping as asked."""
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, plan.steps_per_epoch, plan.total, plan.first)
    masked_step = MaskedStep(optimizer, model, masks, frozen)
    generator = torch.Generator(device=data.train.x.device).manual_seed(config.seed)
    history = History(partial(evaluate, model, data.test), plan.steps_per_epoch, device)
    result = TrainResult(metrics={}, history=history.rows)
    parts = _Parts(model, optimizer, scheduler, history, result.snapshots)
    restored = saver.restore(parts, device) if saver is not None else None
    if restored is not None:
        generator.set_state(restored.epoch_state)
        log.info("resuming from the checkpoint at step %d", restored.iteration)
    elif plan.first in plan.snapshots:
        result.snapshots[plan.snapshots[plan.first]] = state_copy(model)
    position = restored or _Position(plan.first)
    resumed_from = position.iteration if restored is not None else 0
    to_skip = position.drawn if restored is not None else plan.first  # the data order resumes
    bar = _progress_bar(progress, plan.total - plan.first)
    bar.update(position.iteration - plan.first)
    model.train()
    try:
        while position.iteration < plan.total and not result.stopped_early:
            position.epoch_state, position.drawn = generator.get_state(), 0
            for x, y in data.train.batches(config.batch_size, generator, augment=plan.augment):
                position.drawn += 1
                if to_skip:
                    to_skip -= 1
                    continue
                with _autocast(device):
                    loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad(set_to_none=False)
                loss.backward()
                masked_step.step()
                scheduler.step()
                history.add_train_loss(loss)
                position.iteration += 1
                iteration = position.iteration
                bar.update(1)
                if iteration in plan.snapshots:
                    result.snapshots[plan.snapshots[iteration]] = state_copy(model)
                if iteration % plan.eval_every == 0 or iteration == plan.total:
                    _show(bar, history.record(iteration, optimizer.param_groups[0]["lr"]))
                if saver is not None and saver.due(iteration):
                    saver.save(parts, position, device)
                if iteration == plan.total:
                    break
            else:
                position.epoch += 1
                if on_epoch_end is not None and on_epoch_end(position.epoch, model):
                    result.stopped_early = True
                    if history.last_step != position.iteration:
                        lr = optimizer.param_groups[0]["lr"]
                        _show(bar, history.record(position.iteration, lr))
    finally:
        bar.close()
    result.metrics = history.metrics(plan.first, masks.density if masks is not None else 1.0)
    result.metrics["resumed_from_step"] = resumed_from
    result.metrics["attempt_steps"] = position.iteration - max(resumed_from, plan.first)
    return result


def _progress_bar(progress: bool | None, total: int) -> tqdm:
    """A bar over the iterations to train, shown by default when stderr is a terminal."""
    show = sys.stderr.isatty() if progress is None else progress
    return tqdm(total=total, disable=not show, unit="it", leave=False, dynamic_ncols=True)


def _show(bar: tqdm, row: dict[str, float | int]) -> None:
    """Put the newest evaluation on the progress bar."""
    bar.set_postfix(acc=f"{row['test_accuracy']:.4f}", loss=f"{row['train_loss']:.4f}")
