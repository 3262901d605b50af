"""Magnitude pruning at initialization: keep the largest weights."""

from __future__ import annotations

from torch import Tensor, nn

from pai.pruning.masks import Masks
from pai.pruning.registry import Scorer, ScoringContext


class MagnitudeScorer(Scorer):
    """Score |w|: the one-shot, untrained counterpart of magnitude pruning (Han et al. 2015)."""

    name = "magnitude"
    needs_data = False
    default_rounds = 1
    description = "|w|, the weight magnitude at initialization"

    def score(self, model: nn.Module, masks: Masks, context: ScoringContext) -> dict[str, Tensor]:
        return {name: w.detach().abs() for name, w in self.weights(model, masks).items()}
