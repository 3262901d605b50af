"""Sanity-check transforms (Frankle et al. 2021): layerwise shuffle, inversion, re-initialization."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import pai
from pai.pruning.driver import compute_scores, prune
from pai.pruning.masks import Masks, kept_count
from pai.pruning.sanity import inverted, reinitialize, shuffle_within_layers


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def net() -> nn.Sequential:
    model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=seeded(p.numel())))
    return model


def test_shuffle_returns_new_masks_with_the_same_layer_counts():
    masks = prune(net(), "magnitude", 10)
    before = {name: m.clone() for name, m in masks.items()}
    shuffled = shuffle_within_layers(masks, seeded(0))
    assert shuffled is not masks
    assert shuffled != masks
    assert shuffled.layer_kept() == masks.layer_kept()
    for name in masks:  # the input is untouched, every layer is shuffled
        assert torch.equal(masks[name], before[name])
        assert not torch.equal(shuffled[name], masks[name])
    assert shuffle_within_layers(masks, seeded(0)) == shuffled
    assert shuffle_within_layers(masks, seeded(1)) != shuffled


def test_inverted_scorer_negates_and_keeps_the_lowest():
    model = net()
    scorer = inverted("magnitude")
    assert scorer.name == "magnitude-inverted"
    assert scorer.needs_data is False and scorer.default_rounds == 1
    scores = compute_scores(model, scorer, device="cpu")
    for name, s in compute_scores(model, "magnitude", device="cpu").items():
        assert torch.equal(scores[name], -s)
    masks = prune(model, scorer, 4)
    assert masks.kept == kept_count(masks.total, 4)
    kept = torch.cat([model.get_parameter(n).detach().abs()[m] for n, m in masks.items()])
    dropped = torch.cat([model.get_parameter(n).detach().abs()[~m] for n, m in masks.items()])
    assert kept.max() <= dropped.min()


def test_inverted_iterative_scorer_ranks_live_weights_only():
    """Pruned weights score 0, the highest negated score: they must still not come back."""
    masks = prune(net(), inverted("magnitude"), 16, rounds=4)
    assert masks.kept == kept_count(masks.total, 16)


def test_inverted_force_keeps_revival_and_prunes():
    """FORCE scores pruned weights at their original values; its inversion must ask for them."""
    scorer = inverted("force")
    assert scorer.allows_revival is True
    assert inverted("snip").allows_revival is False
    x = torch.randn(8, 20, generator=seeded(0))
    y = torch.randint(0, 5, (8,), generator=seeded(1))
    masks = prune(net(), scorer, 16, rounds=4, data=[(x, y)], device="cpu")
    assert masks.kept == kept_count(masks.total, 16)


def test_reinitialize_draws_fresh_weights_under_the_same_mask():
    model = pai.build_model("lenet300", "mnist", seed=0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    masks = prune(model, "magnitude", 10)
    fresh = reinitialize(model, masks, seed=1)
    for name, value in model.state_dict().items():  # the original is untouched
        assert torch.equal(value, state[name])
    for name, mask in masks.items():
        weight = fresh.get_parameter(name).detach()
        assert (weight[~mask] == 0).all()
        original = model.get_parameter(name).detach()
        assert not torch.equal(weight[mask], original[mask])
    for name, p in fresh.named_parameters():
        if name.endswith("bias"):
            assert (p == 0).all()
    # Kaiming normal with fan_in: std sqrt(2 / 784) for the first layer
    first = reinitialize(model, Masks.dense(model), seed=1).get_parameter("features.1.weight")
    assert first.std().item() == pytest.approx(math.sqrt(2 / 784), rel=0.02)
    again = reinitialize(model, masks, seed=1)
    for name, value in fresh.state_dict().items():
        assert torch.equal(value, again.state_dict()[name])


def test_reinitialize_with_the_zoo_seed_matches_the_zoo_initialization():
    model = pai.build_model("lenet5", "mnist", seed=4)
    dense = Masks.dense(model)
    rebuilt = reinitialize(pai.build_model("lenet5", "mnist", seed=9), dense, seed=4)
    for name, value in model.state_dict().items():
        assert torch.equal(value, rebuilt.state_dict()[name]), name
