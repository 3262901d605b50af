"""Random pruning: the baseline every informed scorer has to beat."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pai.pruning.masks import Masks
from pai.pruning.registry import Scorer, ScoringContext


class RandomScorer(Scorer):
    """Scores drawn i.i.d. uniform on [0, 1) from the seeded generator: a uniformly random
    mask (globally, or with the same density per layer when pruned layerwise)."""

    name = "random"
    needs_data = False
    default_rounds = 1
    description = "i.i.d. uniform scores from the seeded generator"

    def score(self, model: nn.Module, masks: Masks, context: ScoringContext) -> dict[str, Tensor]:
        return {
            name: torch.rand(mask.shape, generator=context.generator, dtype=torch.float64).to(
                context.device
            )
            for name, mask in masks.items()
        }
