"""SynFlow (Tanaka et al. 2020): iterative synaptic flow pruning, without data."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from pai.core.errors import PaiError
from pai.pruning.masks import Masks
from pai.pruning.registry import Scorer, ScoringContext


class SynflowScorer(Scorer):
    """Score |w * dR/dw| with R = 1^T (prod |W|) 1, the synaptic flow of an all-ones input.

    R is evaluated on the masked network with every weight and normalization scale replaced by
    its absolute value and every bias, BatchNorm shift and running mean set to zero: R has no
    bias terms, and flow entering mid-network would starve the early layers. The model is in
    eval mode, so BatchNorm divides by its running std. The computation runs in float64, through
    `torch.func.functional_call` so the model is neither copied nor changed: R grows like the
    product of the layers' norms and overflows float32 on VGG-19 and ResNet-56.
    """

    name = "synflow"
    needs_data = False
    default_rounds = 100
    description = "|w * dR/dw|, synaptic flow of an all-ones input (Tanaka et al. 2020)"

    def score(self, model: nn.Module, masks: Masks, context: ScoringContext) -> dict[str, Tensor]:
        if context.input_shape is None:
            raise PaiError("synflow needs the input shape: pass input_shape=, e.g. (3, 32, 32)")
        state = {}
        for name, p in model.named_parameters():
            p = p.detach().to(torch.float64)
            state[name] = torch.zeros_like(p) if name.rpartition(".")[2] == "bias" else p.abs()
        for name, b in model.named_buffers():
            if name.rpartition(".")[2] == "running_mean":
                state[name] = torch.zeros_like(b, dtype=torch.float64)
            else:
                state[name] = b.to(torch.float64) if b.is_floating_point() else b
        weights = {name: state[name].requires_grad_() for name in masks}
        ones = torch.ones(1, *context.input_shape, dtype=torch.float64, device=context.device)
        flow = functional_call(model, state, (ones,)).sum()
        grads = self.gradients(flow, weights)
        return {name: (w * grads[name]).detach().abs() for name, w in weights.items()}
