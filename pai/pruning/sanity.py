"""Sanity checks for pruning at initialization (Frankle et al. 2021, "Pruning Neural Networks at
Initialization: Why Are We Missing the Mark?").

If a method's mask carries information, these ablations should hurt it: shuffling the mask
within each layer (keeping only per-layer densities), keeping the lowest-scored weights instead
of the highest, and re-initializing the weights under the mask.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from pai.pruning.masks import Masks, as_masks
from pai.pruning.registry import Scorer, ScoringContext, resolve_scorer


def shuffle_within_layers(masks: Masks | Mapping[str, Tensor], generator: torch.Generator) -> Masks:
    """New masks with each layer's entries permuted by a seeded random permutation.

    Every layer keeps its number of kept weights (so its density) and loses which ones. The
    permutations are drawn from `generator` (on its own device), layer by layer in mask order.
    """
    shuffled = {}
    for name, mask in as_masks(masks).items():
        order = torch.randperm(mask.numel(), generator=generator, device=generator.device)
        shuffled[name] = mask.reshape(-1)[order.to(mask.device)].reshape(mask.shape)
    return Masks(shuffled)


class InvertedScorer(Scorer):
    """A scorer that keeps the weights `base` scores lowest: its scores negated."""

    def __init__(self, base: Scorer):
        self.base = base
        self.name = f"{base.name}-inverted"
        self.needs_data = base.needs_data
        self.default_rounds = base.default_rounds
        self.needs_training = getattr(base, "needs_training", False)
        self.allows_revival = getattr(base, "allows_revival", False)
        self.description = f"the lowest-scored weights of {base.name} kept (sanity check)"

    def score(self, model: nn.Module, masks: Masks, context: ScoringContext) -> dict[str, Tensor]:
        return {name: -s for name, s in self.base.score(model, masks, context).items()}


def inverted(scorer: str | Scorer) -> Scorer:
    """The scorer (a name or a `Scorer`) with every score negated: it keeps the lowest."""
    return InvertedScorer(resolve_scorer(scorer))


@torch.no_grad()
def reinitialize(model: nn.Module, masks: Masks | Mapping[str, Tensor], seed: int) -> nn.Module:
    """A copy of `model` with fresh weights from `seed` under the same masks.

    Every Conv and Linear weight is redrawn Kaiming-normal (fan_in, ReLU gain: the zoo's
    initialization, after the SynFlow code) from a generator seeded with `seed`, in module
    order, and its bias set to zero; other parameters and buffers are kept. The pruned weights
    are then zeroed. `model` itself is not changed.
    """
    masks = as_masks(masks)
    masks.check_model(model)
    fresh = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    for module in fresh.modules():
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            weight = torch.empty(module.weight.shape, dtype=module.weight.dtype)
            nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu", generator=generator)
            module.weight.copy_(weight)
            if module.bias is not None:
                module.bias.zero_()
    masks.apply(fresh)
    return fresh
