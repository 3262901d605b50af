"""Tickets: what every pruning method produces, so every method lands in the same table.

A ticket is a mask, the weights to start training from, and what it cost to find. Scorers give
tickets at step 0 with no training; early-bird after a few epochs of dense training; IMP after
many full trainings. The harness then trains every ticket under the same budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

from pai.pruning.masks import Masks


@dataclass(frozen=True)
class SearchCost:
    """What finding a ticket cost: training epochs and steps spent, and scoring passes."""

    epochs: float = 0.0
    steps: int = 0
    scoring_passes: int = 0

    def __add__(self, other: SearchCost) -> SearchCost:
        return SearchCost(
            self.epochs + other.epochs,
            self.steps + other.steps,
            self.scoring_passes + other.scoring_passes,
        )


@dataclass(frozen=True)
class StoredTraining:
    """The run directory of a finished training of exactly a ticket (an IMP level), whose
    files (`pai.training.record`) a run that would train the same can copy."""

    path: Path


@dataclass
class Ticket:
    """A mask, the state_dict to train from (pruned weights already zero), and its search cost.

    `source_state` is the state the mask was applied to (the initial, rewound or trained
    weights before masking; None: `state` itself): a shuffled mask is applied to it, so an
    ablation keeps the weights the method chose from. `converged` says whether the search's
    stopping rule fired (None: it has none). `trained` holds a finished training of exactly
    this ticket under the requested budget, which the harness reuses instead of training again.
    `frozen`, when set, holds the values the pruned weights keep through training instead of
    zero (a full tensor per masked name, read at the pruned entries; `state` holds them too).
    """

    masks: Masks
    state: dict[str, Tensor]
    cost: SearchCost = field(default_factory=SearchCost)
    source_state: dict[str, Tensor] | None = None
    converged: bool | None = None
    trained: StoredTraining | None = None
    frozen: dict[str, Tensor] | None = None
