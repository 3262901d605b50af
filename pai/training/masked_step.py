"""The optimizer step of masked training: pruned weights are exactly zero after every step."""

from __future__ import annotations

import torch
from torch import nn

from pai.pruning.masks import Masks


class MaskedStep:
    """`optimizer.step()` wrapped so that pruned weights stay exactly zero.

    Before the step the gradient of every masked parameter is multiplied by its mask, so a
    pruned weight gets no update from the loss and optimizer state (momentum, Adam's moments)
    never accumulates for it; after the step the weight is multiplied by its mask, which
    removes whatever weight decay or momentum carried in. Masks are cast once to each
    parameter's dtype. Without masks this is a plain `optimizer.step()`.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, model: nn.Module, masks: Masks | None):
        params = dict(model.named_parameters())
        masked = [(params[n], m.to(params[n].dtype)) for n, m in (masks or {}).items()]
        self.optimizer = optimizer
        self.params = [p for p, _ in masked]
        self.masks = [m for _, m in masked]

    def step(self) -> None:
        """Zero the pruned gradients, step the optimizer, zero the pruned weights again."""
        if self.params:
            torch._foreach_mul_([p.grad for p in self.params], self.masks)
        self.optimizer.step()
        if self.params:
            with torch.no_grad():
                torch._foreach_mul_(self.params, self.masks)
