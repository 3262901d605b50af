"""The optimizer step of masked training: pruned weights are exactly zero (or exactly their
frozen values) after every step."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from pai.core.errors import PaiError
from pai.pruning.masks import Masks


class MaskedStep:
    """`optimizer.step()` wrapped so that pruned weights stay exactly zero.

    Before the step the gradient of every masked parameter is multiplied by its mask, so a
    pruned weight gets no update from the loss and optimizer state (momentum, Adam's moments)
    never accumulates for it; after the step the weight is multiplied by its mask, which
    removes whatever weight decay or momentum carried in. Masks are cast once to each
    parameter's dtype. Without masks this is a plain `optimizer.step()`.

    With `frozen` (a tensor per masked name), the pruned entries are set back to their values
    in `frozen` after every step instead of zero: they take part in the forward pass but never
    change, whatever momentum or weight decay would do (Zhou et al. 2019's "freeze at init").
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        model: nn.Module,
        masks: Masks | None,
        frozen: Mapping[str, Tensor] | None = None,
    ):
        params = dict(model.named_parameters())
        masked = [(params[n], m.to(params[n].dtype)) for n, m in (masks or {}).items()]
        self.optimizer = optimizer
        self.params = [p for p, _ in masked]
        self.masks = [m for _, m in masked]
        self.fills = [] if frozen is None else frozen_fills(model, masks, frozen)

    def step(self) -> None:
        """Zero the pruned gradients, step the optimizer, zero the pruned weights again."""
        if self.params:
            torch._foreach_mul_([p.grad for p in self.params], self.masks)
        self.optimizer.step()
        if self.params:
            with torch.no_grad():
                torch._foreach_mul_(self.params, self.masks)
                if self.fills:
                    torch._foreach_add_(self.params, self.fills)


def frozen_fills(model: nn.Module, masks: Masks | None, frozen: Mapping[str, Tensor]) -> list:
    """(1 - mask) * frozen for every masked parameter, in mask order: what a masked weight adds
    back after being multiplied by its mask. PaiError unless `frozen` covers every mask."""
    if not masks or set(frozen) != set(masks):
        raise PaiError(
            f"frozen values need one tensor per masked parameter: masks {sorted(masks or {})}, "
            f"frozen {sorted(frozen)}"
        )
    params = dict(model.named_parameters())
    return [
        (~m.to(params[n].device)).to(params[n].dtype) * frozen[n].to(params[n])
        for n, m in masks.items()
    ]


@torch.no_grad()
def hold_frozen(model: nn.Module, masks: Masks, frozen: Mapping[str, Tensor]) -> None:
    """Set the pruned entries of `model`'s masked parameters to their `frozen` values."""
    params = dict(model.named_parameters())
    for (name, mask), fill in zip(masks.items(), frozen_fills(model, masks, frozen), strict=True):
        params[name].mul_(mask.to(params[name])).add_(fill)
