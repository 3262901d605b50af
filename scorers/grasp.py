"""GraSP (Wang et al. 2020): keep the weights whose removal would most reduce gradient flow."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pai.pruning.masks import Masks
from pai.pruning.registry import Scorer, ScoringContext


class GraspScorer(Scorer):
    """Score w * (H g), higher kept (the same as removing the highest -w * Hg of the paper).

    With L_T the mean cross-entropy of the logits divided by `temperature` (200, as in the
    paper's code) and w the live weights: g = dL_T/dw, H its Hessian, and Hg = d/dw (g(w) . v)
    with v = g held constant, by double backprop. Pruned weights are not variables of the
    masked network, so g is zeroed there before it is used as v.
    """

    name = "grasp"
    needs_data = True
    default_rounds = 1
    description = "w * Hg, gradient-flow preservation (Wang et al. 2020)"

    def __init__(self, temperature: float = 200.0):
        self.temperature = temperature

    def hessian_gradient(
        self, model: nn.Module, masks: Masks, context: ScoringContext
    ) -> dict[str, Tensor]:
        """Hg for every masked parameter, accumulated batch by batch to bound memory."""
        weights = self.weights(model, masks)
        grads = self.loss_gradients(model, masks, context, self.temperature)
        direction = {name: grads[name] * masks[name] for name in weights}
        hessian_gradient = {name: torch.zeros_like(w) for name, w in weights.items()}
        for loss in self.batch_losses(model, context, self.temperature):
            batch_grads = self.gradients(loss, weights, create_graph=True)
            flow = sum((g * direction[name]).sum() for name, g in batch_grads.items())
            for name, hg in self.gradients(flow, weights).items():
                hessian_gradient[name] += hg
        return hessian_gradient

    def score(self, model: nn.Module, masks: Masks, context: ScoringContext) -> dict[str, Tensor]:
        hessian_gradient = self.hessian_gradient(model, masks, context)
        return {
            name: w.detach() * hessian_gradient[name]
            for name, w in self.weights(model, masks).items()
        }
