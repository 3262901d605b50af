"""SNIP (Lee et al. 2019): connection sensitivity from one gradient of the loss."""

from __future__ import annotations

from torch import Tensor, nn

from pai.pruning.masks import Masks
from pai.pruning.registry import Scorer, ScoringContext


class SnipScorer(Scorer):
    """Score |w * dL/dw|, L the mean cross-entropy over the given batches: the first-order
    estimate of how much the loss changes when the weight is removed."""

    name = "snip"
    needs_data = True
    default_rounds = 1
    description = "|w * dL/dw|, connection sensitivity (Lee et al. 2019)"

    def score(self, model: nn.Module, masks: Masks, context: ScoringContext) -> dict[str, Tensor]:
        grads = self.loss_gradients(model, masks, context)
        return {
            name: (w.detach() * grads[name]).abs() for name, w in self.weights(model, masks).items()
        }
