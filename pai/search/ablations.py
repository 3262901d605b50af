"""Ablations of a found ticket: the one path behind compare's sanity checks and IMP's controls.

Frankle et al. 2021 ("Pruning Neural Networks at Initialization: Why Are We Missing the Mark?")
and Frankle & Carbin 2019 test what a method found by destroying one part of its ticket:

- `shuffle`: each layer's mask permuted at random (`shuffle_within_layers`), applied to the
  weights the method's mask was applied to (`Ticket.source_state`): only the layerwise
  densities survive (IMP's "random pruning" control).
- `reinit`: the same mask over freshly drawn weights (`reinitialize`): only the mask survives.

Both draw from `pai.core.seeds.ablation_seed`. The ablated ticket keeps the original's cost.
"""

from __future__ import annotations

import torch
from torch import nn

from pai.core.errors import PaiError, unknown_name
from pai.pruning.sanity import reinitialize, shuffle_within_layers
from pai.search.ticket import Ticket

ABLATIONS: tuple[str, ...] = ("shuffle", "reinit")


def ablate(ticket: Ticket, ablation: str, model: nn.Module, seed: int) -> Ticket:
    """`ticket` with one part destroyed: `shuffle` its mask, or `reinit` its weights.

    `model` is a network of the ticket's architecture (its weights are overwritten); `seed`
    seeds the permutation or the new weights. The result's weights have the pruned ones zero.
    """
    from pai.training.loop import state_copy

    if ablation == "reinit":
        model.load_state_dict(ticket.state)
        fresh = reinitialize(model, ticket.masks, seed)
        return Ticket(ticket.masks, state_copy(fresh), ticket.cost)
    if ablation == "shuffle":
        if ticket.source_state is None:
            raise PaiError(
                "shuffle needs the weights the ticket's mask was applied to (source_state)"
            )
        masks = shuffle_within_layers(ticket.masks, torch.Generator().manual_seed(seed))
        model.load_state_dict(ticket.source_state)
        masks.apply(model)
        return Ticket(masks, state_copy(model), ticket.cost)
    raise unknown_name("ablation", ablation, ABLATIONS)
