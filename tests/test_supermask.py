"""Learned supermasks: frozen weights, exact counts, straight-through gradients, a mask that learns."""

from __future__ import annotations

import argparse
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from pai.cli import compare as compare_cli
from pai.core.errors import PaiError
from pai.data.loading import Split, load_dataset
from pai.models import build_model
from pai.pruning.masks import Masks, keep_topk, layerwise_counts
from pai.search.methods import get_search
from pai.testing import check_scorer, toy_batches, toy_mlp
from pai.training.config import TrainConfig
from pai.training.loop import evaluate
from scorers.supermask import ScoredNetwork, SupermaskOptions, SupermaskSearch


@pytest.fixture(scope="module")
def mnist_small(data_root):
    """2000 training and 1000 test images of real MNIST."""
    data = load_dataset("mnist", root=data_root, device="cpu")

    def head(split: Split, n: int) -> Split:
        return Split(split.x[:n], split.y[:n], split.num_classes, split.pad_value)

    return dataclasses.replace(data, train=head(data.train, 2000), test=head(data.test, 1000))


SEARCH = TrainConfig(budget="2ep", batch_size=100, lr=0.5, eval_every="1ep")


@pytest.fixture(scope="module")
def edge_popup(mnist_small):
    model = build_model("lenet300", "mnist", seed=0)
    ticket = SupermaskSearch().search(model, mnist_small, 2.0, train_config=SEARCH, seed=0)
    return model, ticket


def test_supermask_is_a_registered_method_that_keeps_the_protocol():
    assert isinstance(get_search("supermask"), SupermaskSearch)
    check_scorer("supermask")


def test_the_weights_stay_at_their_initialization_and_every_layer_keeps_its_count(edge_popup):
    model, ticket = edge_popup
    initial = build_model("lenet300", "mnist", seed=0).state_dict()
    for key, value in ticket.state.items():
        expected = initial[key] * ticket.masks[key] if key in ticket.masks else initial[key]
        assert torch.equal(value, expected), key  # nothing but the mask was learned
    sizes = {n: m.numel() for n, m in ticket.masks.items()}
    assert ticket.masks.layer_kept() == layerwise_counts(sizes, 2.0)
    assert ticket.cost.epochs == 2 and ticket.cost.steps == 40
    assert all(torch.equal(p, initial[n]) for n, p in model.state_dict().items())  # untouched


def test_the_learned_supermask_beats_a_random_mask_of_the_same_counts(edge_popup, mnist_small):
    model, ticket = edge_popup
    net = build_model("lenet300", "mnist", seed=0)
    net.load_state_dict(ticket.state)
    learned = evaluate(net, mnist_small.test)[0]
    generator = torch.Generator().manual_seed(0)
    random = keep_topk(
        {n: torch.rand(m.shape, generator=generator) for n, m in ticket.masks.items()},
        2.0,
        "layerwise",
    )
    net = build_model("lenet300", "mnist", seed=0)
    random.apply(net)
    assert learned > 0.6 and learned > evaluate(net, mnist_small.test)[0] + 0.3


def test_the_search_is_deterministic_and_seeded(mnist_small):
    model = build_model("lenet300", "mnist", seed=0)
    short = SEARCH.replace(budget="5it")
    first, second, other = (
        SupermaskSearch().search(model, mnist_small, 2.0, train_config=short, seed=seed)
        for seed in (0, 0, 1)
    )
    assert first.masks == second.masks and first.masks != other.masks


def _scored(rule: str):
    """A toy MLP under a scored network, its scores, frozen weights and one batch."""
    model = toy_mlp(0)
    names = ["features.1.weight", "fc.weight"]
    generator = torch.Generator().manual_seed(3)
    scores = {n: torch.randn(model.get_parameter(n).shape, generator=generator) for n in names}
    counts = {n: s.numel() // 2 for n, s in scores.items()}

    def final(s):
        return Masks({n: torch.ones_like(v, dtype=torch.bool) for n, v in s.items()})

    net = ScoredNetwork(model, scores, rule, final, counts, torch.Generator().manual_seed(5))
    return net, model, names, toy_batches(model, sizes=(8,))[0]


def test_edge_popup_gradient_is_straight_through_the_top_k_of_abs_scores():
    net, model, names, (x, y) = _scored("edge-popup")
    F.cross_entropy(net(x), y).backward()
    # independently: the loss of the network whose weights are w * m, m the top-k of |s|
    weights = {}
    for name, s in zip(names, net.scores, strict=True):
        flat = s.detach().abs().reshape(-1)
        keep = torch.zeros_like(flat, dtype=torch.bool)
        keep[torch.topk(flat, flat.numel() // 2).indices] = True
        effective = (model.get_parameter(name).detach() * keep.reshape(s.shape)).requires_grad_()
        weights[name] = effective
    out = torch.func.functional_call(model, weights, (x,))
    grads = torch.autograd.grad(F.cross_entropy(out, y), list(weights.values()))
    for name, s, grad in zip(names, net.scores, grads, strict=True):
        w = model.get_parameter(name).detach()
        assert torch.allclose(s.grad, grad * w * s.detach().sign(), atol=1e-7)


def test_bernoulli_gradient_is_straight_through_the_sample_to_sigmoid():
    net, model, names, (x, y) = _scored("bernoulli")
    F.cross_entropy(net(x), y).backward()
    generator = torch.Generator().manual_seed(5)  # the network's sampler, replayed
    weights = {}
    for name, s in zip(names, net.scores, strict=True):
        u = torch.rand(s.shape, generator=generator)
        sample = (u < torch.sigmoid(s.detach())).float()
        weights[name] = (model.get_parameter(name).detach() * sample).requires_grad_()
    out = torch.func.functional_call(model, weights, (x,))
    grads = torch.autograd.grad(F.cross_entropy(out, y), list(weights.values()))
    for name, s, grad in zip(names, net.scores, grads, strict=True):
        w = model.get_parameter(name).detach()
        p = torch.sigmoid(s.detach())
        assert torch.allclose(s.grad, grad * w * p * (1 - p), atol=1e-7)


def test_bernoulli_ticket_keeps_exactly_the_requested_count(mnist_small):
    model = build_model("lenet300", "mnist", seed=0)
    config = TrainConfig(budget="3it", batch_size=100, lr=10.0)
    options = SupermaskOptions(rule="bernoulli")
    ticket = SupermaskSearch().search(model, mnist_small, 8.0, train_config=config, options=options)
    assert ticket.masks.kept == round(ticket.masks.total / 8)
    assert ticket.cost.steps == 3


def test_options_are_checked_and_are_compare_flags():
    for bad in ({"rule": "popup"}, {"lr": 0.0}, {"budget": "0it"}):
        with pytest.raises(PaiError):
            SupermaskOptions(**bad)
    assert SupermaskOptions(budget="100").budget == "100it"
    parser = argparse.ArgumentParser(prog="pai")
    compare_cli.register(parser.add_subparsers())
    text = parser._subparsers._group_actions[0].choices["compare"].format_help()
    for flag in ("--supermask-rule", "--supermask-budget", "--supermask-lr"):
        assert flag in text
