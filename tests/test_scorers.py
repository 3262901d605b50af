"""The built-in scorers against their definitions, computed by hand or by finite differences."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call

import pai
from pai.pruning.masks import Masks
from pai.pruning.driver import compute_scores
from scorers.grasp import GraspScorer


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def two_layer_linear(d: int = 4, h: int = 3, o: int = 2) -> nn.Sequential:
    """x -> W2 W1 x without biases, float64, weights of both signs."""
    net = nn.Sequential(nn.Linear(d, h, bias=False), nn.Linear(h, o, bias=False)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.randn(h, d, generator=seeded(1), dtype=torch.float64))
        net[1].weight.copy_(torch.randn(o, h, generator=seeded(2), dtype=torch.float64))
    return net


def smooth_net() -> nn.Sequential:
    """A small float64 classifier with biases and a smooth nonlinearity, for finite differences."""
    net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=seeded(p.numel()), dtype=torch.float64))
    return net


def batches() -> list[tuple[Tensor, Tensor]]:
    """Two batches of unequal size, so a per-batch mean would differ from the mean over all."""
    x = torch.randn(8, 4, generator=seeded(3), dtype=torch.float64)
    y = torch.randint(0, 3, (8,), generator=seeded(4))
    return [(x[:3], y[:3]), (x[3:], y[3:])]


def partial_masks(net: nn.Module) -> Masks:
    masks = dict(Masks.dense(net))
    masks["0.weight"] = masks["0.weight"].clone()
    masks["0.weight"][0, :2] = False
    masks["0.weight"][3, 1] = False
    return Masks(masks)


def masked_params(net: nn.Module, masks: Masks) -> dict[str, Tensor]:
    params = {name: p.detach().clone() for name, p in net.named_parameters()}
    for name, mask in masks.items():
        params[name] = params[name] * mask
    return params


def mean_loss(net: nn.Module, params: dict[str, Tensor], temperature: float = 1.0) -> Tensor:
    """L: the mean cross-entropy over every example of every batch."""
    data = batches()
    total = sum(len(y) for _, y in data)
    losses = [
        nn.functional.cross_entropy(
            functional_call(net, params, (x,)) / temperature, y, reduction="sum"
        )
        for x, y in data
    ]
    return sum(losses) / total


def finite_difference_gradient(net, params, name, eps=1e-6, temperature=1.0) -> Tensor:
    """dL/dparams[name] by central differences, one coordinate at a time."""
    grad = torch.zeros_like(params[name])
    for index in range(params[name].numel()):
        shifted = {}
        for sign in (1, -1):
            moved = dict(params)
            moved[name] = params[name].clone()
            moved[name].view(-1)[index] += sign * eps
            shifted[sign] = mean_loss(net, moved, temperature)
        grad.view(-1)[index] = (shifted[1] - shifted[-1]) / (2 * eps)
    return grad


def autograd_gradients(net, params, names, temperature) -> dict[str, Tensor]:
    params = {n: p.clone().requires_grad_(n in names) for n, p in params.items()}
    loss = mean_loss(net, params, temperature)
    return dict(zip(names, torch.autograd.grad(loss, [params[n] for n in names]), strict=True))


def test_synflow_equals_the_closed_form_on_a_two_layer_linear_net():
    net = two_layer_linear()
    w1, w2 = net[0].weight.detach().abs(), net[1].weight.detach().abs()
    scores = compute_scores(net, "synflow", input_shape=(4,), device="cpu")
    # R = 1^T |W2| |W1| 1: dR/dW1[j, i] = (1^T |W2|)[j], dR/dW2[k, j] = (|W1| 1)[j]
    assert torch.allclose(scores["0.weight"], w1 * torch.outer(w2.sum(0), torch.ones(4).double()))
    assert torch.allclose(scores["1.weight"], w2 * torch.outer(torch.ones(2).double(), w1.sum(1)))


def test_synflow_closed_form_under_a_mask_starves_disconnected_weights():
    net = two_layer_linear()
    masks = dict(Masks.dense(net))
    masks["0.weight"] = torch.ones(3, 4, dtype=torch.bool)
    masks["0.weight"][1] = False  # hidden unit 1 receives nothing
    masks = Masks(masks)
    w1 = net[0].weight.detach().abs() * masks["0.weight"]
    w2 = net[1].weight.detach().abs()
    scores = compute_scores(net, "synflow", masks=masks, input_shape=(4,), device="cpu")
    assert torch.allclose(scores["0.weight"], w1 * torch.outer(w2.sum(0), torch.ones(4).double()))
    assert torch.allclose(scores["1.weight"], w2 * torch.outer(torch.ones(2).double(), w1.sum(1)))
    assert (scores["1.weight"][:, 1] == 0).all()


def conv_bn_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 3),
    )


def test_synflow_ignores_biases_shifts_and_signs_and_uses_float64():
    net = conv_bn_net()
    reference = compute_scores(net, "synflow", input_shape=(2, 5, 5), device="cpu")
    assert all(s.dtype == torch.float64 for s in reference.values())
    with torch.no_grad():
        net[0].bias.fill_(-3.0)
        net[1].bias.fill_(5.0)
        net[1].running_mean.fill_(-7.0)
        net[1].weight.neg_()
        net[4].weight.neg_()
        net[4].bias.fill_(2.0)
    changed = compute_scores(net, "synflow", input_shape=(2, 5, 5), device="cpu")
    for name in reference:
        assert torch.equal(reference[name], changed[name])


def test_synflow_needs_an_input_shape_for_models_outside_the_zoo():
    with pytest.raises(pai.PaiError, match="input"):
        compute_scores(two_layer_linear(), "synflow", device="cpu")


@pytest.mark.parametrize("model_name", ["vgg19", "resnet56"])
def test_synflow_scores_are_finite_on_deep_nets(model_name):
    model = pai.build_model(model_name, "cifar10")
    scores = compute_scores(model, "synflow", device="cpu")
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    assert torch.isfinite(flat).all()
    assert (flat > 0).all()  # no underflow either: every weight carries flow at initialization


def test_snip_is_abs_weight_times_finite_difference_gradient():
    net, masks = smooth_net(), partial_masks(smooth_net())
    params = masked_params(net, masks)
    scores = compute_scores(net, "snip", masks=masks, data=batches(), device="cpu")
    assert set(scores) == {"0.weight", "2.weight"}
    for name in scores:
        grad = finite_difference_gradient(net, params, name)
        assert torch.allclose(scores[name], (params[name] * grad).abs(), rtol=1e-6, atol=1e-9)
    assert (scores["0.weight"][~masks["0.weight"]] == 0).all()


def test_snip_loss_is_the_mean_over_all_examples_whatever_the_batching():
    net = smooth_net()
    x = torch.cat([b[0] for b in batches()])
    y = torch.cat([b[1] for b in batches()])
    split = compute_scores(net, "snip", data=batches(), device="cpu")
    whole = compute_scores(net, "snip", data=[(x, y)], device="cpu")
    for name in split:
        assert torch.allclose(split[name], whole[name], rtol=1e-12, atol=0)


@pytest.mark.parametrize("temperature", [1.0, 200.0])
def test_grasp_hessian_gradient_matches_finite_differences_of_the_gradient(temperature):
    net, masks = smooth_net(), partial_masks(smooth_net())
    params, names = masked_params(net, masks), list(masks)
    grads = autograd_gradients(net, params, names, temperature)
    direction = {n: grads[n] * masks[n] for n in names}  # g of the masked network
    eps = 1e-5
    moved = {
        sign: autograd_gradients(
            net,
            {**params, **{n: params[n] + sign * eps * direction[n] for n in names}},
            names,
            temperature,
        )
        for sign in (1, -1)
    }
    scorer = GraspScorer(temperature=temperature)
    scores = compute_scores(net, scorer, masks=masks, data=batches(), device="cpu")
    for n in names:
        hessian_gradient = (moved[1][n] - moved[-1][n]) / (2 * eps)
        expected = params[n] * hessian_gradient
        assert torch.allclose(scores[n], expected, rtol=1e-5, atol=1e-9 * expected.abs().max())


def test_grasp_default_temperature_is_200():
    assert pai.get_scorer("grasp").temperature == 200.0


def test_magnitude_is_abs_weight_on_the_masked_network():
    net, masks = smooth_net(), partial_masks(smooth_net())
    scores = compute_scores(net, "magnitude", masks=masks, device="cpu")
    params = masked_params(net, masks)
    for name in masks:
        assert torch.equal(scores[name], params[name].abs())


def test_random_scores_come_from_the_seed():
    net = conv_bn_net()
    first = compute_scores(net, "random", seed=5, device="cpu")
    again = compute_scores(net, "random", seed=5, device="cpu")
    other = compute_scores(net, "random", seed=6, device="cpu")
    for name, s in first.items():
        assert s.shape == dict(net.named_parameters())[name].shape
        assert torch.equal(s, again[name])
        assert not torch.equal(s, other[name])
        assert ((s >= 0) & (s < 1)).all()


@pytest.mark.parametrize("scorer", ["snip", "grasp"])
def test_data_scorers_evaluate_batchnorm_with_running_statistics(scorer):
    """Eval mode: a single example's scores do not depend on which batch it is in."""
    net = conv_bn_net().train()
    x = torch.randn(6, 2, 5, 5, generator=seeded(7))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    whole = compute_scores(net, scorer, data=[(x, y)], device="cpu")
    halves = compute_scores(net, scorer, data=[(x[:3], y[:3]), (x[3:], y[3:])], device="cpu")
    for name in whole:
        assert torch.allclose(whole[name], halves[name], rtol=1e-4, atol=1e-10)
