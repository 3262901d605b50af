"""Early-bird tickets: the distance, the stopping rule, the channel mask, and real training runs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pai.data.loading import Dataset, Split, class_balanced_subset, load_dataset
from pai.core.errors import PaiError
from pai.pruning.masks import Masks, kept_count, prunable_parameters
from pai.models import build_model
from pai.pruning.driver import prune
from pai.pruning.registry import get_scorer
from pai.training.config import TrainConfig
from scorers.earlybird import (
    EarlyBirdOptions,
    EarlyBirdScorer,
    bn_channel_mask,
    bn_channel_pairs,
    mask_distance,
    should_stop,
    successive_distances,
)


def _masks(bits: list[int]) -> Masks:
    """A one-layer mask of 20 weights; `bits` are the indices kept."""
    mask = torch.zeros(20, dtype=torch.bool)
    mask[bits] = True
    return Masks({"w": mask})


def test_distance_is_the_fraction_of_weights_that_differ():
    a = _masks([0, 1, 2, 3])
    b = _masks([0, 1, 2, 4])  # weights 3 and 4 differ: 2 of 20
    assert mask_distance(a, b) == pytest.approx(0.1)
    assert mask_distance(a, a) == 0
    two_layers = Masks({"x": torch.tensor([True, False]), "y": torch.tensor([True, True])})
    other = Masks({"x": torch.tensor([False, True]), "y": torch.tensor([True, True])})
    assert mask_distance(two_layers, other) == pytest.approx(2 / 4)


def test_no_stop_before_five_masks_even_when_identical():
    same = _masks([0, 1])
    assert not should_stop([same] * 4, epsilon=0.1)
    assert should_stop([same] * 5, epsilon=0.1)


def test_alternating_masks_never_stop():
    a, b = _masks([0, 1, 2, 3]), _masks([4, 5, 6, 7])  # distance 8 / 20 = 0.4
    history = [a, b] * 10
    assert all(not should_stop(history[:n], epsilon=0.1) for n in range(1, len(history) + 1))


def test_stops_once_all_four_recent_distances_are_below_epsilon():
    # successive distances: 0.3, then 0.05 three times, then 0.05 again
    history = [
        _masks([0, 1, 2, 3]),
        _masks([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),  # 6 of 20 differ: 0.3
        _masks([0, 1, 2, 3, 4, 5, 6, 7, 8, 10]),  # 2 of 20: 0.1 -- not below 0.1
        _masks([0, 1, 2, 3, 4, 5, 6, 7, 8]),  # 1 of 20: 0.05
        _masks([0, 1, 2, 3, 4, 5, 6, 7, 8, 11]),  # 0.05
    ]
    assert successive_distances(history) == pytest.approx([0.3, 0.1, 0.05, 0.05])
    assert not should_stop(history, epsilon=0.1)
    history.append(_masks([0, 1, 2, 3, 4, 5, 6, 7, 8]))  # window now 0.1, 0.05, 0.05, 0.05
    assert not should_stop(history, epsilon=0.1)  # 0.1 is not below 0.1
    assert should_stop(history, epsilon=0.11)
    history.append(_masks([0, 1, 2, 3, 4, 5, 6, 7, 8, 12]))  # 0.05, 0.05, 0.05, 0.05
    assert should_stop(history, epsilon=0.1)


class _TinyConvNet(nn.Module):
    """conv1 (4 channels) + BN, conv2 (2 channels) + BN, global pool, Linear 2 -> 3."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 2, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(2)
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean(dim=(2, 3)))


def test_bn_channel_mask_prunes_whole_channels_by_lowest_bn_scale():
    net = _TinyConvNet()
    with torch.no_grad():
        net.bn1.weight.copy_(torch.tensor([0.5, -0.1, 2.0, 0.3]))
        net.bn2.weight.copy_(torch.tensor([0.2, 1.0]))
    assert bn_channel_pairs(net) == [("conv1.weight", "bn1"), ("conv2.weight", "bn2")]
    # 36 + 72 + 6 = 114 weights; compression 2 keeps at most 57. Ascending |gamma|: conv1 ch1
    # (9 weights) -> 105 kept, conv2 ch0 (36) -> 69, conv1 ch3 (9) -> 60, conv1 ch0 (9) -> 51.
    masks = bn_channel_mask(net, 2)
    assert masks.kept == 51
    assert masks["conv1.weight"].flatten(1).all(1).tolist() == [False, False, True, False]
    assert not masks["conv1.weight"][[0, 1, 3]].any()
    assert masks["conv2.weight"].flatten(1).all(1).tolist() == [False, True]
    assert not masks["conv2.weight"][0].any()
    assert masks["fc.weight"].all()
    with pytest.raises(PaiError, match="cannot reach compression"):
        bn_channel_mask(net, 50)  # the classifier's 6 weights alone are 114 / 6 = 19x


def test_registered_as_a_scorer_that_trains():
    scorer = get_scorer("earlybird")
    assert isinstance(scorer, EarlyBirdScorer)
    assert scorer.needs_training and scorer.needs_data
    with pytest.raises(PaiError):
        prune(build_model("lenet300", "mnist"), scorer, 10)


@pytest.fixture(scope="module")
def small_mnist(data_root) -> Dataset:
    """100 training examples per class and the first 1000 test examples of real MNIST."""
    data = load_dataset("mnist", root=data_root, device="cpu")
    x, y = class_balanced_subset(data.train, 100, torch.Generator().manual_seed(0))
    train = Split(x, y, 10, data.train.pad_value)
    test = Split(data.test.x[:1000], data.test.y[:1000], 10, data.test.pad_value)
    return Dataset(spec=data.spec, root=data.root, train=train, test=test)


def _state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_weights_frozen_after_the_start_stop_at_the_fifth_epoch(small_mnist):
    """With lr 0 every epoch draws the same mask: all distances are 0, so training stops at
    the end of epoch 5, the first epoch with five masks."""
    model = build_model("lenet300", "mnist", seed=0)
    config = TrainConfig(budget="20ep", batch_size=500, lr=0.0, eval_every="20ep")
    ticket = EarlyBirdScorer().search(model, small_mnist, 10, train_config=config)
    assert ticket.converged
    assert ticket.cost.epochs == 5 and ticket.cost.steps == 10
    assert ticket.distances == [0, 0, 0, 0]


def test_does_not_stop_while_masks_keep_changing(small_mnist):
    """Training at lr 0.1 changes the magnitude mask every epoch by more than 1e-6 (one weight
    of 266,200 is 3.8e-6), so the rule never fires and the whole budget is spent."""
    model = build_model("lenet300", "mnist", seed=0)
    config = TrainConfig(budget="6ep", batch_size=500, lr=0.1, eval_every="6ep")
    ticket = EarlyBirdScorer().search(
        model, small_mnist, 10, train_config=config, options=EarlyBirdOptions(epsilon=1e-6)
    )
    assert not ticket.converged
    assert ticket.cost.epochs == 6
    assert min(ticket.distances) > 1e-6
    assert ticket.masks.kept == kept_count(ticket.masks.total, 10)


def test_real_training_stops_early_with_a_ticket_of_the_right_size(small_mnist):
    model = build_model("lenet300", "mnist", seed=3)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(budget="30ep", batch_size=200, lr=0.01, eval_every="30ep")
    ticket = EarlyBirdScorer().search(model, small_mnist, 20, train_config=config)
    assert ticket.converged
    assert 5 <= ticket.cost.epochs < 30
    assert max(ticket.distances[-4:]) < 0.1  # the four distances the rule fired on
    total = sum(p.numel() for p in prunable_parameters(model).values())
    assert ticket.masks.total == total
    assert ticket.masks.kept == kept_count(total, 20)
    for name, mask in ticket.masks.items():
        assert not ticket.state[name][~mask].any()  # pruned weights are zero
    # restart="trained": the weights moved away from the initialization
    assert not torch.equal(
        ticket.state["fc.weight"], initial["fc.weight"] * ticket.masks["fc.weight"]
    )
    assert _state_equal(model.state_dict(), initial)  # the model given is left unchanged

    rewound = EarlyBirdScorer().search(
        model, small_mnist, 20, train_config=config, options=EarlyBirdOptions(restart="init")
    )
    assert rewound.masks == ticket.masks  # same training, same stopping point
    for name, value in initial.items():
        expected = value * rewound.masks[name] if name in rewound.masks else value
        assert torch.equal(rewound.state[name], expected)
