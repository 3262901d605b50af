"""Mask criteria (Zhou et al. 2019): each ranks a hand-made (start, trained) pair as defined."""

from __future__ import annotations

import argparse
import dataclasses

import pytest
import torch

from pai.cli import imp as imp_cli
from pai.core.errors import PaiError
from pai.core.store import canonical, config_hash
from pai.data.loading import Split, load_dataset
from pai.pruning.criteria import (
    Criterion,
    available_criteria,
    get_criterion,
    live_ranks,
    register_criterion,
    unregister_criterion,
)
from pai.pruning.levels import prune_by_criterion, prune_by_magnitude
from pai.pruning.masks import Masks
from pai.search.imp import ImpConfig, run_imp
from pai.search.imp_search import ImpOptions, ImpSearch
from pai.search.protocol import SearchRequest
from pai.training.config import TrainConfig

ZHOU = (
    "large_final",
    "small_final",
    "large_init",
    "small_init",
    "large_init_large_final",
    "small_init_small_final",
    "magnitude_increase",
    "movement",
    "random",
)
# |w_i| = .1 .4 .3 .2 .05 .5 and |w_f| = .6 .1 .2 .05 .7 .45
START = torch.tensor([0.1, -0.4, 0.3, -0.2, 0.05, 0.5])
TRAINED = torch.tensor([0.6, -0.1, 0.2, 0.05, -0.7, 0.45])
# Positions from most to least worth keeping, worked out by hand from each definition.
RANKINGS = {
    "large_final": [4, 0, 5, 2, 1, 3],  # |w_f|
    "small_final": [3, 1, 2, 5, 0, 4],  # -|w_f|
    "large_init": [5, 1, 2, 3, 0, 4],  # |w_i|
    "small_init": [4, 0, 3, 2, 1, 5],  # -|w_i|
    "magnitude_increase": [4, 0, 5, 2, 3, 1],  # .5 -.3 -.1 -.15 .65 -.05
    "movement": [4, 0, 1, 3, 2, 5],  # .5 .3 .1 .25 .75 .05
    # ranks q_i = 1 4 3 2 0 5, q_f = 4 1 2 0 5 3; min = 1 1 2 0 0 3 (ties: lower position)
    "large_init_large_final": [5, 2, 0, 1, 3, 4],
    # max = 4 4 3 2 5 5, scored -max
    "small_init_small_final": [3, 2, 0, 1, 4, 5],
}


def kept(criterion: str, count: int, start=START, trained=TRAINED, live=None, seed=0):
    masks = Masks({"w": torch.ones(6, dtype=torch.bool) if live is None else live})
    generator = torch.Generator().manual_seed(seed)
    pruned = prune_by_criterion(
        {"w": start}, {"w": trained}, masks, [["w"]], [count], get_criterion(criterion), generator
    )
    return set(pruned["w"].nonzero().squeeze(1).tolist())


def test_the_nine_criteria_of_zhou_et_al_are_registered():
    assert set(ZHOU) <= set(available_criteria())


@pytest.mark.parametrize("criterion", sorted(RANKINGS))
def test_each_criterion_keeps_the_prefixes_of_its_hand_computed_ranking(criterion):
    ranking = RANKINGS[criterion]
    for count in range(1, 7):
        assert kept(criterion, count) == set(ranking[:count]), count


def test_large_final_is_prune_by_magnitude():
    model = torch.nn.Linear(6, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(TRAINED.reshape(1, 6))
    masks = Masks({"weight": torch.ones(1, 6, dtype=torch.bool)})
    by_magnitude = prune_by_magnitude(model, masks, [["weight"]], [3])
    assert set(by_magnitude["weight"].reshape(-1).nonzero().squeeze(1).tolist()) == {4, 0, 5}


def test_ranks_are_taken_among_live_weights_and_pruned_weights_stay_pruned():
    live = torch.tensor([True, True, True, True, False, True])  # position 4 already pruned
    ranks = live_ranks({"w": TRAINED.abs()}, {"w": live})["w"]
    # |w_f| of the live ones: .6 .1 .2 .05 _ .45 -> ranks 4 1 2 0 _ 3
    assert ranks.tolist() == [4.0, 1.0, 2.0, 0.0, -1.0, 3.0]
    for criterion in RANKINGS:
        for count in range(1, 6):
            survivors = kept(criterion, count, live=live)
            assert 4 not in survivors and len(survivors) == count


def test_random_ignores_the_weights_and_follows_its_generator():
    other = kept("random", 3, start=-START, trained=TRAINED * 7)
    assert kept("random", 3) == other
    assert kept("random", 3, seed=1) == kept("random", 3, seed=1)
    draws = {frozenset(kept("random", 3, seed=seed)) for seed in range(8)}
    assert len(draws) > 1


def test_ranking_is_within_each_group():
    # two layers ranked apart: each keeps its own largest |w_f|
    start = {"a": torch.zeros(3), "b": torch.zeros(3)}
    trained = {"a": torch.tensor([1.0, 2.0, 3.0]), "b": torch.tensor([0.1, 0.3, 0.2])}
    masks = Masks({n: torch.ones(3, dtype=torch.bool) for n in trained})
    out = prune_by_criterion(
        start, trained, masks, [["a"], ["b"]], [1, 1], get_criterion("movement")
    )
    assert out["a"].tolist() == [False, False, True] and out["b"].tolist() == [False, True, False]


class LargestStartSign(Criterion):
    """A third-party criterion: keep positive start weights first."""

    name = "positive_start"
    description = "start weights > 0 first"

    def value(self, start, trained):
        return (start > 0).double()


def test_a_criterion_registered_in_process_is_found_by_name():
    register_criterion(LargestStartSign)
    try:
        assert "positive_start" in available_criteria()
        assert kept("positive_start", 3) == {0, 2, 4}  # the first three of 0, 2, 4, 5
        assert ImpConfig("lenet300", "mnist", TrainConfig(), criterion="positive_start")
    finally:
        unregister_criterion("positive_start")
    with pytest.raises(PaiError, match="unknown criterion 'positive_start'"):
        ImpConfig("lenet300", "mnist", TrainConfig(), criterion="positive_start")


def test_the_default_criterion_keeps_every_existing_hash():
    base = ImpConfig("lenet300", "mnist", TrainConfig())
    spelled = ImpConfig("lenet300", "mnist", TrainConfig(), criterion="large_final")
    assert spelled.criterion is None and config_hash(spelled.identity()) == config_hash(
        base.identity()
    )
    other = ImpConfig("lenet300", "mnist", TrainConfig(), criterion="movement")
    assert config_hash(other.identity()) != config_hash(base.identity())
    request = SearchRequest("lenet300", "mnist", 10.0, 0, TrainConfig(), options=ImpOptions())
    assert "criterion" not in canonical(ImpSearch().identity(request).options)
    with pytest.raises(PaiError, match="criterion"):
        ImpOptions(criterion="largest")


def test_imp_help_lists_every_criterion_by_name():
    parser = argparse.ArgumentParser(prog="pai")
    imp_cli.register(parser.add_subparsers())
    text = parser._subparsers._group_actions[0].choices["imp"].format_help()
    for name in ZHOU:
        assert name in text


@pytest.fixture(scope="module")
def mnist_small(data_root):
    data = load_dataset("mnist", root=data_root, device="cpu")

    def head(split: Split, n: int) -> Split:
        return Split(split.x[:n], split.y[:n], split.num_classes, split.pad_value)

    return dataclasses.replace(data, train=head(data.train, 600), test=head(data.test, 500))


def test_imp_prunes_level_one_by_its_criterion_against_the_rewinding_weights(mnist_small, tmp_path):
    train = TrainConfig(budget="6it", batch_size=100, lr=0.05, eval_every="3it")
    config = ImpConfig("lenet300", "mnist", train, levels=1, rate=0.5, criterion="movement")
    result = run_imp(config, tmp_path, data=mnist_small, device="cpu")
    rewind = torch.load(result.path / "rewind.pt", weights_only=True)
    final = result.levels[0].final_state()
    names = list(result.levels[1].masks)
    movement = torch.cat([(final[n] - rewind[n]).abs().reshape(-1) for n in names])
    expected = torch.zeros_like(movement, dtype=torch.bool)
    expected[
        torch.sort(movement, descending=True, stable=True).indices[: result.levels[1].kept]
    ] = True
    got = torch.cat([result.levels[1].masks[n].reshape(-1) for n in names])
    assert torch.equal(got, expected)
    untrained = result.table()["untrained_test_accuracy"]
    assert untrained.between(0, 1).all() and untrained.iloc[0] < 0.5  # an untrained network
