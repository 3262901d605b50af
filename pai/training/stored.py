"""A stored training run: build the model, train it (masked or dense), write the run directory."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from pai.core.store import Run
from pai.pruning.masks import Masks
from pai.training.checkpoint import DEFAULT_POLICY, CheckpointPolicy
from pai.training.config import TrainConfig
from pai.training.record import TRAINED_CONTENTS, train_into

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainRunConfig:
    """The identity of a `pai train` run: model, dataset, init seed, training, and mask content."""

    model: str
    dataset: str
    model_seed: int
    train: TrainConfig
    masks_sha256: str | None = None
    train_per_class: int | None = None


def masks_digest(masks: Masks) -> str:
    """SHA-256 of a mask's names, shapes and bits: the same mask always gives the same digest."""
    digest = hashlib.sha256()
    for name in sorted(masks):
        mask = masks[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(mask.shape)};".encode())
        digest.update(mask.numpy().tobytes())
    return digest.hexdigest()


def train_run(
    model_name: str,
    dataset_name: str,
    config: TrainConfig,
    out: str | Path,
    *,
    model_seed: int = 0,
    masks: Masks | None = None,
    train_per_class: int | None = None,
    data_root: str | Path | None = None,
    device: torch.device | str | None = None,
    progress: bool | None = None,
    checkpoint: CheckpointPolicy | None = DEFAULT_POLICY,
) -> tuple[Run, bool]:
    """Train a zoo model and store the run; returns (run, whether it ran now).

    A finished run with the same config is not trained again; an unfinished one resumes from
    its checkpoint (`checkpoint`, None: none). `train_per_class` trains on the fixed
    class-balanced subset of that many examples per class. The directory holds the files of
    every trained run (`pai.training.record`), the `COMPLETE` marker last. The run is claimed
    (`Run.claim`) while it trains, so two processes never train it at once.
    """
    from pai.data.loading import load_for_training
    from pai.models import build_model

    run = Run(
        out,
        "train",
        TrainRunConfig(
            model_name,
            dataset_name,
            model_seed,
            config,
            masks_digest(masks) if masks else None,
            train_per_class,
        ),
    )
    if run.verified(TRAINED_CONTENTS):  # a damaged run is moved aside and trained again
        return run, False
    with run.claim():
        if run.verified(TRAINED_CONTENTS):  # finished by another process while this one waited
            return run, False
        model = build_model(model_name, dataset_name, seed=model_seed)
        data = load_for_training(
            dataset_name, root=data_root, device=device, train_per_class=train_per_class
        )
        device = data.train.x.device
        options = dict(device=device, progress=progress, checkpoint=checkpoint)
        train_into(run, model, data, config, masks=masks, **options)
        run.finish()
    log.info("finished %s", run.path)
    return run, True
