"""Ablations of a found ticket: the one path behind compare's variants and IMP's controls.

Each destroys or perturbs one part of a ticket to test what its method found, whichever method
made it. Frankle et al. 2021 ("Pruning Neural Networks at Initialization: Why Are We Missing
the Mark?") and Frankle & Carbin 2019:

- `shuffle`: each layer's mask permuted at random (`shuffle_within_layers`), applied to the
  weights the method's mask was applied to (`Ticket.source_state`): only the layerwise
  densities survive (IMP's "random pruning" control).
- `reinit`: the same mask over freshly drawn weights (`reinitialize`): only the mask survives.

Zhou, Lan, Liu & Yosinski 2019 ("Deconstructing lottery tickets"):

- `sign_constant`: every kept weight sign(w) * sigma_l, sigma_l the standard deviation of its
  layer's initial weights: the signs survive, the magnitudes become one per layer.
- `freeze_init`: the pruned weights keep the values they had in `source_state` (the start
  weights before masking: the initialization for a ticket at step 0) through training,
  instead of zero; the kept weights train as usual.

Frankle, Schwab & Morcos 2020 ("The early phase of neural network training"), for a ticket
rewound to step k; w0 is the network's initialization (step 0):

- `signs_from_init`: |w| * sign(w0); `magnitudes_from_init`: |w0| * sign(w).
- `sign_flip`: each kept weight's sign flipped with probability 1/2.
- `permute_global`, `permute_layer`, `permute_filter`, `permute_same_sign`: the kept values
  permuted onto the kept positions across the network, within each layer, within each filter
  (output unit), or within each layer among weights of one sign (`permute_kept`).
- `noise:SCALE`: each kept weight plus Gaussian noise of standard deviation SCALE * sigma_l.

Zhou et al.'s "reshuffle" (the kept start values permuted within each layer) is
`permute_layer`. Every random draw comes from a generator seeded with the variant's seed
(`pai.core.seeds.ablation_seed`). The ablated ticket keeps the original's cost.
"""

from __future__ import annotations

import torch
from torch import nn

from pai.core.errors import PaiError
from pai.pruning.masks import Masks
from pai.pruning.perturbations import (
    add_noise,
    constant_magnitudes,
    flip_signs,
    layer_init_std,
    magnitudes_from,
    permute_kept,
    signs_from,
)
from pai.pruning.sanity import reinitialize, shuffle_within_layers
from pai.report.schema import NOISE, WEIGHT_VARIANTS, noise_scale
from pai.search.ticket import Ticket

ABLATIONS: tuple[str, ...] = ("shuffle", "reinit", *WEIGHT_VARIANTS, f"{NOISE}:SCALE")
PERMUTE = "permute_"


def ablate(ticket: Ticket, ablation: str, model: nn.Module, seed: int) -> Ticket:
    """`ticket` with one part destroyed or perturbed (the module docstring's definitions).

    `model` is a network of the ticket's architecture holding its initialization (step 0):
    the reference of `signs_from_init` and `magnitudes_from_init` and the source of each
    layer's sigma_l; its weights are overwritten. `seed` seeds every draw. The result's
    pruned weights are zero, except under `freeze_init`.
    """
    from pai.training.loop import state_copy

    masks = ticket.masks
    if ablation == "reinit":
        model.load_state_dict(ticket.state)
        fresh = reinitialize(model, masks, seed)
        return Ticket(masks, state_copy(fresh), ticket.cost)
    generator = torch.Generator().manual_seed(seed)
    if ablation in ("shuffle", "freeze_init"):
        if ticket.source_state is None:
            raise PaiError(
                f"{ablation} needs the weights the ticket's mask was applied to (source_state)"
            )
        if ablation == "freeze_init":
            source = {k: v.detach().clone() for k, v in ticket.source_state.items()}
            frozen = {name: source[name] for name in masks}
            return Ticket(masks, source, ticket.cost, source_state=source, frozen=frozen)
        masks = shuffle_within_layers(masks, generator)
        model.load_state_dict(ticket.source_state)
        masks.apply(model)
        return Ticket(masks, state_copy(model), ticket.cost)
    initial = state_copy(model)
    state = _perturbed(ticket, ablation, initial, generator)
    model.load_state_dict(state)
    masks.apply(model)
    return Ticket(masks, state_copy(model), ticket.cost, source_state=ticket.source_state)


def _perturbed(ticket: Ticket, ablation: str, initial: dict, generator: torch.Generator) -> dict:
    """The ticket's start weights under one weight variant (all but reinit and shuffle)."""
    masks: Masks = ticket.masks
    state = {k: v.to(initial[k].device) for k, v in ticket.state.items()}
    scale = noise_scale(ablation)
    if scale is not None:
        return add_noise(state, masks, layer_init_std(initial, masks), scale, generator)
    if ablation == "sign_constant":
        return constant_magnitudes(state, masks, layer_init_std(initial, masks))
    if ablation == "signs_from_init":
        return signs_from(state, masks, initial)
    if ablation == "magnitudes_from_init":
        return magnitudes_from(state, masks, initial)
    if ablation == "sign_flip":
        return flip_signs(state, masks, generator)
    if ablation.startswith(PERMUTE) and ablation in WEIGHT_VARIANTS:
        return permute_kept(state, masks, generator, ablation.removeprefix(PERMUTE))
    raise PaiError(f"unknown ablation {ablation!r}; choose from: {', '.join(ABLATIONS)}")
