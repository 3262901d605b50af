"""FORCE (de Jorge et al. 2021, "Progressive Skeletonization"): foresight connection sensitivity."""

from __future__ import annotations

from torch import Tensor, nn

from pai.core.errors import PaiError
from pai.pruning.masks import Masks
from pai.pruning.registry import Scorer, ScoringContext


class ForceScorer(Scorer):
    """Score |theta * dL/dw_bar| for every weight, pruned ones included: w_bar = theta * m is the
    masked network, theta the weights before any pruning, L the mean cross-entropy.

    For a live weight this is SNIP's score on the masked network; for a pruned one it is the
    first-order change of the loss if the weight came back with its original value, so a weight
    pruned in an early round can return in a later one (`allows_revival`). 60 rounds on the
    exponential schedule, as in the authors' published runs (num_steps 60).
    """

    name = "force"
    needs_data = True
    default_rounds = 60
    allows_revival = True
    description = (
        "|theta * dL/dw| on the masked network, pruned weights may return (de Jorge et al. 2021)"
    )

    def score(self, model: nn.Module, masks: Masks, context: ScoringContext) -> dict[str, Tensor]:
        original = context.original_weights
        if original is None:
            raise PaiError(
                "force scores pruned weights at their original values: the context must carry "
                "original_weights (pai.prune sets them for scorers that allow revival)"
            )
        grads = self.loss_gradients(model, masks, context)
        return {name: (original[name] * grads[name]).abs() for name in masks}
