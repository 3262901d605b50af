"""Checkpoints: a stored run's training state, saved as it trains, so a killed run resumes.

Cluster jobs hit time limits and preemption; a run killed at step t restarts from its last
checkpoint instead of from step 0. A checkpoint holds everything the next step depends on, so
the resumed run ends bit-identical to an uninterrupted one on the same device:

- the weights, the optimizer's state (momentum, Adam's moments) and the scheduler's;
- the data order: the batch generator's state at the start of the current epoch and how many
  batches of that epoch were drawn (the epoch's permutation and augmentations are drawn again
  from that state and the drawn ones skipped);
- the history so far (evaluation rows, the running loss sum, the initial loss, timings) and the
  snapshots taken so far (IMP's rewinding weights).

A checkpoint is used only when its `fingerprint` matches the training asked for (its config,
budget, start step, device type and a digest of the start weights and mask); any other is
ignored and overwritten. Checkpointing is not part of a run's identity (its hash).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pai.core.atomic import atomic_torch_save
from pai.core.errors import PaiError
from pai.core.steps import Step

if TYPE_CHECKING:  # torch is imported where tensors are: the CLI's flags read this module
    import torch
    from torch import Tensor

log = logging.getLogger(__name__)

DEFAULT_EVERY = "1000it"  # a lenet300 epoch is 469 it, a CIFAR one 391: seconds to a minute apart


@dataclass(frozen=True)
class CheckpointPolicy:
    """How often a stored run saves its training state (`every`, a step string) and whether
    the checkpoint outlives the finished run (`keep`; by default it is deleted)."""

    every: str = DEFAULT_EVERY
    keep: bool = False

    def __post_init__(self) -> None:
        step = Step.parse(Step.canonical(self.every))
        if step.count < 1:
            raise PaiError(f"checkpoint interval must be at least one step, got {self.every!r}")
        object.__setattr__(self, "every", str(step))

    def at(self, path: str | Path) -> Checkpointing:
        """This policy for the checkpoint file `path`."""
        return Checkpointing(Path(path), self.every)


DEFAULT_POLICY = CheckpointPolicy()


@dataclass(frozen=True)
class Checkpointing:
    """Where one training saves its checkpoint, and every how many steps (a step string)."""

    path: Path
    every: str = DEFAULT_EVERY


def state_digest(*states: Mapping[str, Tensor]) -> str:
    """SHA-256 of the names, shapes, dtypes and bytes of the tensors of `states`, in order."""
    import torch

    digest = hashlib.sha256()
    for state in states:
        for name in sorted(state):
            value = state[name].detach().cpu().contiguous()
            digest.update(f"{name}:{tuple(value.shape)}:{value.dtype};".encode())
            digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(path: Path, fingerprint: Mapping[str, Any], state: Mapping[str, Any]) -> None:
    """Write the checkpoint atomically: a kill while writing leaves the previous one."""
    atomic_torch_save({"fingerprint": dict(fingerprint), **state}, path)


def load_checkpoint(
    path: Path, fingerprint: Mapping[str, Any], device: torch.device
) -> dict[str, Any] | None:
    """The checkpoint at `path` if it exists and belongs to this training, else None."""
    import torch

    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # an unreadable file is as good as none: start again
        log.warning("ignoring unreadable checkpoint %s: %s", path, error)
        return None
    if state.get("fingerprint") != dict(fingerprint):
        log.warning("ignoring checkpoint %s: it belongs to another training", path)
        return None
    return state
