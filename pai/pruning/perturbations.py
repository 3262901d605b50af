"""Perturbations of a ticket's kept weights under its mask: what a ticket needs of its weights.

Each function takes a state_dict (pruned weights zero), the masks and what the perturbation
needs, and returns a new state_dict in which only the kept entries of the masked parameters
changed; pruned entries stay zero and every other tensor is shared unchanged. Random draws
come from the given CPU generator, layer by layer in mask order.

From Zhou et al. (2019, "Deconstructing lottery tickets"): `constant_magnitudes` (every kept
weight sign(w) * sigma_l, sigma_l the standard deviation of layer l's initial weights). From
Frankle, Schwab & Morcos (2020, "The early phase of neural network training"): `signs_from`
and `magnitudes_from` (a reference's signs, or magnitudes, with the ticket's other half),
`flip_signs`, `permute_kept` (globally, within a layer, within a filter, or among weights of
the same sign) and `add_noise` (Gaussian, standard deviation scale * sigma_l).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from pai.core.errors import PaiError, unknown_name

State = Mapping[str, Tensor]
# What a permutation may move a kept value across: the whole network, its layer, its filter
# (output unit: the slice w[o] of a conv or linear weight), or only weights of its sign.
PERMUTATIONS: tuple[str, ...] = ("global", "layer", "filter", "same_sign")


def layer_init_std(initial: State, masks: Mapping[str, Tensor]) -> dict[str, float]:
    """sigma_l: the standard deviation (population, over every entry) of each masked layer's
    initial weights, the scale of the distribution it was drawn from."""
    return {name: float(initial[name].double().std(correction=0)) for name in masks}


def _replace(state: State, values: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {name: values.get(name, tensor) for name, tensor in state.items()}


def _kept(state: State, masks: Mapping[str, Tensor], name: str) -> tuple[Tensor, Tensor]:
    """The flat positions of layer `name`'s kept weights and their values."""
    mask = masks[name].reshape(-1).to(state[name].device)
    positions = mask.nonzero().squeeze(1)
    return positions, state[name].reshape(-1)[positions]


def _with_kept(weight: Tensor, positions: Tensor, values: Tensor) -> Tensor:
    out = weight.detach().clone().reshape(-1)
    out[positions] = values.to(out.dtype)
    return out.reshape(weight.shape)


@torch.no_grad()
def constant_magnitudes(
    state: State, masks: Mapping[str, Tensor], stds: Mapping[str, float]
) -> dict[str, Tensor]:
    """Every kept weight w of layer l becomes sign(w) * stds[l]: signs kept, one magnitude."""
    values = {}
    for name in masks:
        positions, kept = _kept(state, masks, name)
        values[name] = _with_kept(state[name], positions, kept.sign() * stds[name])
    return _replace(state, values)


@torch.no_grad()
def signs_from(state: State, masks: Mapping[str, Tensor], reference: State) -> dict[str, Tensor]:
    """Every kept weight w becomes |w| * sign(r), r its entry in `reference`."""
    values = {}
    for name in masks:
        positions, kept = _kept(state, masks, name)
        signs = reference[name].reshape(-1).to(kept.device)[positions].sign()
        values[name] = _with_kept(state[name], positions, kept.abs() * signs)
    return _replace(state, values)


@torch.no_grad()
def magnitudes_from(
    state: State, masks: Mapping[str, Tensor], reference: State
) -> dict[str, Tensor]:
    """Every kept weight w becomes |r| * sign(w), r its entry in `reference`."""
    values = {}
    for name in masks:
        positions, kept = _kept(state, masks, name)
        magnitudes = reference[name].reshape(-1).to(kept.device)[positions].abs()
        values[name] = _with_kept(state[name], positions, magnitudes * kept.sign())
    return _replace(state, values)


@torch.no_grad()
def flip_signs(
    state: State, masks: Mapping[str, Tensor], generator: torch.Generator, probability: float = 0.5
) -> dict[str, Tensor]:
    """Every kept weight's sign flipped independently with `probability`: magnitudes kept."""
    if not 0 <= probability <= 1:
        raise PaiError(f"sign-flip probability must be in [0, 1], got {probability!r}")
    values = {}
    for name in masks:
        positions, kept = _kept(state, masks, name)
        flip = torch.rand(len(positions), generator=generator, dtype=torch.float64) < probability
        factor = 1 - 2 * flip.to(device=kept.device, dtype=kept.dtype)
        values[name] = _with_kept(state[name], positions, kept * factor)
    return _replace(state, values)


def _shuffle_within(values: Tensor, groups: Tensor, generator: torch.Generator) -> Tensor:
    """`values` permuted uniformly at random within each group (equal entries of `groups`).

    Sorting by group plus a uniform key in [0, 1) lists each group's values in a random
    order; they are written back onto the group's positions in their stored order.
    """
    keys = torch.rand(len(values), generator=generator, dtype=torch.float64)
    groups = groups.detach().cpu().to(torch.float64)
    source = torch.argsort(groups + keys)
    target = torch.argsort(groups, stable=True)
    out = values.clone()
    out[target.to(values.device)] = values[source.to(values.device)]
    return out


@torch.no_grad()
def permute_kept(
    state: State, masks: Mapping[str, Tensor], generator: torch.Generator, within: str
) -> dict[str, Tensor]:
    """The kept values permuted at random onto the kept positions, the mask unchanged.

    `within`: `global` (all layers' kept values pooled), `layer` (each layer alone), `filter`
    (each output unit w[o] of each layer alone) or `same_sign` (each layer alone, positive
    values among the positive positions and negative among the negative, so every position
    keeps its sign).
    """
    if within not in PERMUTATIONS:
        raise unknown_name("permutation", within, PERMUTATIONS)
    names = list(masks)
    kept = {name: _kept(state, masks, name) for name in names}
    if within == "global":
        pooled = torch.cat([kept[n][1].cpu() for n in names])
        moved = _shuffle_within(pooled, torch.zeros(len(pooled)), generator)
        values, offset = {}, 0
        for name in names:
            positions, layer = kept[name]
            chunk = moved[offset : offset + len(layer)].to(layer.device)
            values[name] = _with_kept(state[name], positions, chunk)
            offset += len(layer)
        return _replace(state, values)
    values = {}
    for name in names:
        positions, layer = kept[name]
        if within == "layer":
            groups = torch.zeros(len(layer))
        elif within == "filter":
            groups = torch.div(positions, state[name][0].numel(), rounding_mode="floor")
        else:
            groups = (layer > 0).to(torch.float64)
        values[name] = _with_kept(state[name], positions, _shuffle_within(layer, groups, generator))
    return _replace(state, values)


@torch.no_grad()
def add_noise(
    state: State,
    masks: Mapping[str, Tensor],
    stds: Mapping[str, float],
    scale: float,
    generator: torch.Generator,
) -> dict[str, Tensor]:
    """Every kept weight of layer l plus scale * stds[l] * e, e ~ N(0, 1) i.i.d."""
    if not scale > 0 or scale == float("inf"):
        raise PaiError(f"noise scale must be a finite number > 0, got {scale!r}")
    values = {}
    for name in masks:
        positions, kept = _kept(state, masks, name)
        noise = torch.randn(len(positions), generator=generator, dtype=torch.float64)
        shifted = kept.double() + scale * stds[name] * noise.to(kept.device)
        values[name] = _with_kept(state[name], positions, shifted)
    return _replace(state, values)
