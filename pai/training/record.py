"""The one writer of a trained run directory, and what it holds.

Every run pai trains, whatever experiment asked for it, holds the same files (names in
`pai.core.store.FILES`): `config.json`, `masks.pt` (all ones for a dense run), `start.pt`, `final.pt`,
`history.csv`, `metrics.json` and, last, `COMPLETE`. A run whose training is reused from
another run (an IMP level trained exactly as the ticket would be) holds copies of that run's
files. The caller adds its own files (a comparison's `row.json`) before `run.finish()`.

While it trains, a run saves `checkpoint.pt` (`pai.training.checkpoint`); a run found
unfinished resumes from it, and it is deleted once the training's files are written.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

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
    run.start()
    (masks if masks is not None else Masks.dense(model)).save(run.path / FILES.masks)
    run.save_tensors(FILES.start, state_copy(model, "cpu"))
    saving = checkpoint.at(run.path / FILES.checkpoint) if checkpoint is not None else None
    result = train(model, data, config, masks=masks, checkpoint=saving, **train_options)
    run.save_tensors(FILES.final, state_copy(model, "cpu"))
    run.write_csv(FILES.history, result.history)
    run.write_json(FILES.metrics, {**result.metrics, **(extra_metrics or {})})
    if checkpoint is None or not checkpoint.keep:
        (run.path / FILES.checkpoint).unlink(missing_ok=True)
    return result


def copy_training(run: Run, source: Path, masks: Masks) -> dict[str, Any]:
    """Start `run` as a copy of the training stored in `source`; returns its metrics.

    The files are copied atomically; `masks` is the ticket's mask (the same as the source's).
    """
    run.start()
    masks.save(run.path / FILES.masks)
    for name in (FILES.start, FILES.final, FILES.history, FILES.metrics):
        atomic_write(run.path / name, lambda tmp, name=name: shutil.copyfile(source / name, tmp))
    return run.read_json(FILES.metrics)
