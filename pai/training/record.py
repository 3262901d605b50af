"""The one writer of a trained run directory, and what it holds.

Every run pai trains, whatever experiment asked for it, holds the same files (names in
`pai.core.store.FILES`): `config.json`, `masks.pt` (all ones for a dense run), `start.pt`, `final.pt`,
`history.csv`, `metrics.json` and, last, `COMPLETE`. A run whose training is reused from
another run (an IMP level trained exactly as the ticket would be) holds copies of that run's
files. The caller adds its own files (a comparison's `row.json`) before `run.finish()`.

While it trains, a run saves `checkpoint.pt` (`pai.training.checkpoint`); a run found
unfinished resumes from it, and it is deleted once the training's files are written.

Several runs are trained at once as `TrainingJob`s (`train_jobs`): those that may share a loop
(the same `TrainConfig` apart from the seed, the same architecture) train stacked by
`pai.training.stacked.train_many`, and each run's files are written as soon as its stack ends,
so a kill loses only the runs of the stack in progress. A stacked run does not checkpoint.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pai.core.atomic import atomic_write
from pai.core.store import FILES, Contents, Run
from pai.pruning.masks import Masks
from pai.training.checkpoint import DEFAULT_POLICY, CheckpointPolicy
from pai.training.config import TrainConfig
from pai.training.loop import TrainResult, state_copy, train

# What a trained run must hold to be reused (`Run.verified`): every file pai reads back, with
# the metrics every table takes. Runs written before `start.pt` existed lack it; the callers
# that read it (IMP's controls) ask for it.
TRAINED_CONTENTS: Contents = {
    FILES.config: ("kind",),
    FILES.metrics: ("test_accuracy", "best_test_accuracy", "test_loss", "epochs", "steps"),
    FILES.final: (),
    FILES.history: (),
}


def train_into(
    run: Run,
    model: nn.Module,
    data,
    config: TrainConfig,
    *,
    masks: Masks | None = None,
    extra_metrics: Mapping[str, Any] | None = None,
    checkpoint: CheckpointPolicy | None = DEFAULT_POLICY,
    **train_options: Any,
) -> TrainResult:
    """Start `run`, train `model` from its current weights under `masks`, write the run's files.

    `masks` None trains densely (and stores the all-ones mask, so every run holds one).
    `checkpoint` (None: none) saves the training state into the run as it trains; an
    unfinished run holding a valid checkpoint resumes from it (`Run.start` keeps it). The
    checkpoint is deleted at the end unless the policy keeps it.

    `train_options` go to `pai.training.loop.train` (device, progress, snapshot_at, start_at,
    on_epoch_end). `extra_metrics` are added to `metrics.json`. The run is not finished: the
    caller writes what else it keeps and calls `run.finish()`.
    """
    _start(run, model, masks)
    saving = checkpoint.at(run.path / FILES.checkpoint) if checkpoint is not None else None
    result = train(model, data, config, masks=masks, checkpoint=saving, **train_options)
    result.metrics["stack_size"] = 1
    _store(
        run,
        model,
        result,
        extra_metrics,
        keep_checkpoint=checkpoint is not None and checkpoint.keep,
    )
    return result


def _start(run: Run, model: nn.Module, masks: Masks | None) -> None:
    """Start `run` and write what it starts from: its mask (all ones when dense), its weights."""
    run.start()
    (masks if masks is not None else Masks.dense(model)).save(run.path / FILES.masks)
    run.save_tensors(FILES.start, state_copy(model, "cpu"))


def _store(
    run: Run,
    model: nn.Module,
    result: TrainResult,
    extra_metrics: Mapping[str, Any] | None,
    *,
    keep_checkpoint: bool = False,
) -> None:
    """Write what `run` trained to: its final weights, history and metrics."""
    run.save_tensors(FILES.final, state_copy(model, "cpu"))
    run.write_csv(FILES.history, result.history)
    run.write_json(FILES.metrics, {**result.metrics, **(extra_metrics or {})})
    if not keep_checkpoint:
        (run.path / FILES.checkpoint).unlink(missing_ok=True)


@dataclass
class TrainingJob:
    """One run to train into the store: what `train_into` takes, and what to do after.

    `finish(result)` is called once the run's files are written (the caller adds its own files
    and calls `run.finish()` there).
    """

    run: Run
    model: nn.Module
    config: TrainConfig
    masks: Masks | None = None
    frozen: Mapping[str, Tensor] | None = None
    extra_metrics: Mapping[str, Any] | None = None
    snapshot_at: tuple[str, ...] = ()
    start_at: str = "0it"
    finish: Callable[[TrainResult], None] | None = None

    def loop_key(self) -> Hashable:
        """What jobs that share a loop have in common: the config apart from the seed, the
        steps snapshot and started at, and the architecture (class and tensor shapes)."""
        layout = tuple((name, tuple(t.shape)) for name, t in self.model.state_dict().items())
        config = self.config.replace(seed=0)
        return (config, self.snapshot_at, self.start_at, type(self.model).__name__, layout)


def train_jobs(
    jobs: Sequence[TrainingJob],
    data,
    *,
    device: torch.device | str | None = None,
    progress: bool | None = None,
    checkpoint: CheckpointPolicy | None = DEFAULT_POLICY,
    stack_size: int | None = None,
) -> list[TrainResult]:
    """Train every job into its run, those that may share a loop stacked; results in order.

    `stack_size` bounds a stack (None: `train_many`'s default for the device; 1: each run by
    `train_into`, checkpointing by `checkpoint`). A group of one trains by `train_into` too.
    """
    groups: dict[Hashable, list[int]] = {}
    for index, job in enumerate(jobs):
        groups.setdefault(job.loop_key(), []).append(index)
    results: dict[int, TrainResult] = {}
    for members in groups.values():
        group = [jobs[i] for i in members]
        trained = (
            [_train_alone(job, data, device, progress, checkpoint) for job in group]
            if len(group) == 1 or stack_size == 1
            else _train_stacked(group, data, device, progress, stack_size)
        )
        results.update(zip(members, trained, strict=True))
    return [results[i] for i in range(len(jobs))]


def _train_alone(job: TrainingJob, data, device, progress, checkpoint) -> TrainResult:
    result = train_into(
        job.run,
        job.model,
        data,
        job.config,
        masks=job.masks,
        extra_metrics=job.extra_metrics,
        checkpoint=checkpoint,
        device=device,
        progress=progress,
        frozen=job.frozen,
        snapshot_at=job.snapshot_at,
        start_at=job.start_at,
    )
    if job.finish is not None:
        job.finish(result)
    return result


def _train_stacked(
    group: Sequence[TrainingJob], data, device, progress, stack_size: int | None
) -> list[TrainResult]:
    from pai.training.stacked import train_many

    for job in group:
        _start(job.run, job.model, job.masks)

    def store(index: int, result: TrainResult) -> None:
        job = group[index]
        _store(job.run, job.model, result, job.extra_metrics)
        if job.finish is not None:
            job.finish(result)

    first = group[0]
    return train_many(
        [job.model for job in group],
        data,
        first.config,
        masks=[job.masks for job in group],
        seeds=[job.config.seed for job in group],
        frozen=[job.frozen for job in group],
        device=device,
        progress=progress,
        stack_size=stack_size,
        snapshot_at=first.snapshot_at,
        start_at=first.start_at,
        on_trained=store,
    )


def copy_training(run: Run, source: Path, masks: Masks) -> dict[str, Any]:
    """Start `run` as a copy of the training stored in `source`; returns its metrics.

    The files are copied atomically; `masks` is the ticket's mask (the same as the source's).
    """
    run.start()
    masks.save(run.path / FILES.masks)
    for name in (FILES.start, FILES.final, FILES.history, FILES.metrics):
        atomic_write(run.path / name, lambda tmp, name=name: shutil.copyfile(source / name, tmp))
    return run.read_json(FILES.metrics)
