"""The prune driver: schedules, exact counts, live-only ranking, untouched models, errors."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

import pai
from pai.cli import main
from pai.core.errors import PaiError
from pai.data.loading import class_balanced_subset
from pai.pruning.driver import check_scores, prune, round_compressions
from pai.pruning.masks import Masks, kept_count
from pai.pruning.registry import Scorer
from pai.testing import ModelState


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def bn_net() -> nn.Sequential:
    """A small conv net with BatchNorm, so that train/eval mode and buffers matter."""
    net = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 4),
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=seeded(p.numel())))
    return net


def bn_data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    x = torch.randn(12, 1, 6, 6, generator=seeded(1))
    y = torch.arange(12) % 4
    return [(x[:5], y[:5]), (x[5:], y[5:])]


def test_exponential_schedule_is_geometric_and_ends_on_the_target():
    steps = round_compressions(1.0, 1000.0, 3)
    assert steps[:2] == pytest.approx([10.0, 100.0])
    assert steps[2] == 1000.0
    assert round_compressions(2.0, 32.0, 4) == pytest.approx([4.0, 8.0, 16.0, 32.0])


def test_linear_schedule_lowers_density_in_equal_steps():
    steps = round_compressions(1.0, 5.0, 4, "linear")  # densities 1 -> 0.2 in steps of 0.2
    assert [1 / c for c in steps] == pytest.approx([0.8, 0.6, 0.4, 0.2])


def test_schedules_differ_and_one_round_is_the_target():
    assert round_compressions(1.0, 100.0, 2) == pytest.approx([10.0, 100.0])
    assert round_compressions(1.0, 100.0, 2, "linear") == pytest.approx([1 / 0.505, 100.0])
    assert round_compressions(1.0, 7.0, 1, "linear") == [7.0]


@pytest.mark.parametrize("scorer", ["random", "magnitude", "snip", "grasp", "synflow"])
@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_every_scorer_keeps_exactly_the_target_count(scorer, scope):
    net = bn_net()
    masks = prune(net, scorer, 7, data=bn_data(), scope=scope, rounds=3, input_shape=(1, 6, 6))
    assert list(masks) == list(pai.prunable_parameters(net))
    if scope == "global":
        assert masks.kept == kept_count(masks.total, 7)
    else:
        for mask in masks.values():
            assert int(mask.sum()) == kept_count(mask.numel(), 7)


@pytest.mark.parametrize("scorer", ["random", "snip", "synflow"])
def test_the_same_seed_gives_the_same_masks(scorer):
    def run(seed):
        return prune(
            bn_net(), scorer, 20, data=bn_data(), rounds=4, seed=seed, input_shape=(1, 6, 6)
        )

    assert run(3) == run(3)
    if scorer == "random":
        assert run(3) != run(4)


@pytest.mark.parametrize("scorer", ["snip", "grasp", "synflow", "magnitude"])
def test_prune_leaves_the_model_exactly_as_it_was(scorer):
    net = bn_net().train()
    net[1].eval()  # a mixed-mode model: every flag must survive
    net[3].weight.requires_grad_(False)
    net[4].bias.requires_grad_(False)
    net(torch.randn(4, 1, 6, 6, generator=seeded(2)))  # non-trivial running statistics
    before = ModelState.of(net)
    prune(net, scorer, 10, data=bn_data(), rounds=2, input_shape=(1, 6, 6))
    assert before.first_change(ModelState.of(net)) is None


class _DeadWeightsFirst(Scorer):
    """Gives pruned weights huge scores and records every mask it is shown."""

    name = "dead-weights-first"
    description = "adversarial: pruned weights score highest"

    def __init__(self):
        self.seen: list[Masks] = []

    def score(self, model, masks, context):
        self.seen.append(masks)
        scores = {}
        for name, w in self.weights(model, masks).items():
            assert (w[~masks[name]] == 0).all()  # the network is scored with pruned weights zero
            scores[name] = torch.where(masks[name], w.detach().abs(), torch.full_like(w, 1e30))
        return scores


def test_pruned_weights_never_come_back():
    scorer = _DeadWeightsFirst()
    final = prune(bn_net(), scorer, 50, rounds=5, input_shape=(1, 6, 6))
    history = [*scorer.seen, final]
    assert len(scorer.seen) == 5
    for earlier, later in zip(history, history[1:], strict=False):
        for name in earlier:
            assert not (later[name] & ~earlier[name]).any()
    assert final.kept == kept_count(final.total, 50)


def test_starting_masks_are_only_pruned_further():
    net = bn_net()
    start = prune(net, "random", 4, seed=1)
    masks = prune(net, "magnitude", 16, masks=start)
    assert masks.kept == kept_count(masks.total, 16)  # relative to all prunable weights
    for name in start:
        assert not (masks[name] & ~start[name]).any()
    with pytest.raises(PaiError, match="fewer than"):
        prune(net, "magnitude", 2, masks=start)


def test_data_iterables_are_read_once_and_used_as_given():
    net = bn_net()
    from_list = prune(net, "snip", 10, data=bn_data(), rounds=3)
    from_iterator = prune(net, "snip", 10, data=iter(bn_data()), rounds=3)
    assert from_list == from_iterator


def test_input_shape_comes_from_the_first_batch_when_the_model_has_none():
    net = bn_net()
    from_data = prune(net, "synflow", 10, data=bn_data(), rounds=2)
    assert from_data == prune(net, "synflow", 10, input_shape=(1, 6, 6), rounds=2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scorer": "snip", "compression": 10}, "needs data"),
        ({"scorer": "magnitude", "compression": 0.5}, "compression"),
        ({"scorer": "magnitude", "compression": math.nan}, "compression"),
        ({"scorer": "magnitude", "compression": 10**6}, "above the number of prunable weights"),
        ({"scorer": "magnitude", "compression": 60, "scope": "layerwise"}, "smallest layer"),
        ({"scorer": "magnitude", "compression": 10, "scope": "local"}, "unknown scope"),
        ({"scorer": "magnitude", "compression": 10, "schedule": "cubic"}, "unknown schedule"),
        ({"scorer": "magnitude", "compression": 10, "rounds": 0}, "rounds"),
        ({"scorer": "nope", "compression": 10}, "unknown scorer"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(PaiError, match=message):
        prune(bn_net(), **kwargs)


def test_scorers_that_train_are_rejected():
    class Trains(Scorer):
        name = "trains"
        needs_training = True

    with pytest.raises(PaiError, match="through training.*pai compare"):
        prune(bn_net(), Trains(), 10)


def test_scores_of_the_wrong_shape_or_not_finite_are_errors():
    class Broken(Scorer):
        name = "broken"

        def __init__(self, value):
            self.value = value

        def score(self, model, masks, context):
            return {n: torch.full(m.shape, self.value) for n, m in masks.items()}

    with pytest.raises(PaiError, match="non-finite"):
        prune(bn_net(), Broken(math.inf), 10)
    with pytest.raises(PaiError, match="non-finite"):
        prune(bn_net(), Broken(math.nan), 10)


def test_check_scores_reads_every_live_score_and_no_dead_one():
    """One non-finite live score is found however the others sum; dead weights may hold any."""
    scorer = Scorer()
    scorer.name = "check"
    masks = Masks({"a": torch.tensor([True, True, False]), "b": torch.ones(2, dtype=torch.bool)})
    huge = torch.tensor([1e308, 1e308], dtype=torch.float64)  # sums to inf, every score finite
    check_scores({"a": torch.tensor([1.0, 2.0, math.nan]), "b": huge}, masks, scorer)
    for bad in (math.inf, -math.inf, math.nan):
        with pytest.raises(PaiError, match="non-finite.*'a'"):
            check_scores({"a": torch.tensor([1.0, bad, 0.0]), "b": huge}, masks, scorer)
    with pytest.raises(PaiError, match="non-finite.*'b'"):
        check_scores({"a": torch.zeros(3), "b": torch.tensor([math.inf, -math.inf])}, masks, scorer)


def _check_deep_synflow(masks: Masks, compression: float) -> None:
    assert masks.kept == kept_count(masks.total, compression)
    assert min(masks.layer_kept().values()) > 0  # no layer collapse


def test_iterative_synflow_reaches_1e5_on_vgg16_without_emptying_a_layer():
    """The fast variant (10 rounds); the paper's 100 rounds are the slow test below."""
    model = pai.build_model("vgg16", "cifar10")
    _check_deep_synflow(prune(model, "synflow", 1e5, rounds=10, device="cpu"), 1e5)


@pytest.mark.slow
def test_synflow_default_100_rounds_reaches_1e5_on_vgg16():
    model = pai.build_model("vgg16", "cifar10")
    _check_deep_synflow(prune(model, "synflow", 1e5, device="cpu"), 1e5)


def test_cli_scores_a_seeded_class_balanced_training_subset(data_root, tmp_path, capsys):
    out = tmp_path / "masks.pt"
    argv = ["prune", "--model", "lenet300", "--dataset", "mnist", "--scorer", "snip"]
    argv += ["--compression", "10", "--per-class", "3", "--batch-size", "7", "--seed", "2"]
    assert main([*argv, "--data-root", str(data_root), "--device", "cpu", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "features.1.weight  300x784" in printed
    assert re.search(r"total\s+26620\s+266200\s+10%", printed)
    train = pai.load_dataset("mnist", root=data_root, device="cpu").train
    x, y = class_balanced_subset(train, 3, seeded(2))
    batches = list(zip(x.split(7), y.split(7), strict=True))
    model = pai.build_model("lenet300", "mnist", seed=2)
    expected = prune(model, "snip", 10, data=batches, seed=2)
    assert Masks.load(out) == expected
