"""Iterative SNIP, FORCE, NTK-SAP, PX and ProsPr against their definitions, on networks small
enough to compute every score by hand or by finite differences."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import pai
from pai.pruning.driver import compute_scores, prepare_scoring, prune, round_compressions
from pai.pruning.masks import Masks, kept_count
from pai.pruning.registry import Scorer, get_scorer
from pai.pruning.sanity import reinitialize
from scorers.ntk_sap import NtkSapScorer

NEW = {"iter-snip": 60, "force": 60, "ntk-sap": 20, "px": 100, "prospr": 1}


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def two_layer(activation: nn.Module | None = None) -> nn.Sequential:
    """Linear 3 -> 4, an optional activation, Linear 4 -> 2, no biases, float64."""
    layers = [nn.Linear(3, 4, bias=False), nn.Linear(4, 2, bias=False)]
    if activation is not None:
        layers.insert(1, activation)
    net = nn.Sequential(*layers).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=seeded(p.numel()), dtype=torch.float64))
    return net


def batches(classes: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    x = torch.randn(6, 3, generator=seeded(7), dtype=torch.float64)
    y = torch.arange(6) % classes
    return [(x[:4], y[:4]), (x[4:], y[4:])]


def partial_mask(net: nn.Module) -> Masks:
    """Every prunable weight kept except two of the first layer and one of the second."""
    masks = {name: torch.ones_like(p, dtype=torch.bool) for name, p in net.named_parameters()}
    first, second = list(masks)
    masks[first][0, 1] = masks[first][2, 0] = False
    masks[second][1, 3] = False
    return Masks(masks)


def test_the_new_scorers_are_registered_with_the_papers_defaults():
    for name, rounds in NEW.items():
        scorer = get_scorer(name)
        assert scorer.default_rounds == rounds
        assert scorer.needs_data is (name != "ntk-sap")
        assert scorer.allows_revival is (name == "force")


# --- Iterative SNIP and FORCE ------------------------------------------------------------------


def test_iterative_snip_is_snip_rescored_on_the_masked_network_each_round():
    net, data = two_layer(nn.Tanh()), batches()
    masks = None
    for target in round_compressions(1.0, 6.0, 3):
        masks = prune(net, "snip", target, data=data, masks=masks)
    assert prune(net, "iter-snip", 6, data=data, rounds=3) == masks


def revival_case() -> tuple[nn.Linear, list[tuple[torch.Tensor, torch.Tensor]]]:
    """A 2x2 linear classifier in which FORCE must revive the weight it prunes first.

    W = [[1, -0.5], [-0.9, 0.5]], examples e1 (class 0) and e2 (class 1). FORCE's scores are
    |w_kj| |mean (p_k - y_k) x_j|: dense, 0.0651, 0.0672, 0.0585, 0.0672, so keeping 3 prunes
    w10 = -0.9. Without it the margin on e1 falls from 1.9 to 1, sigmoid(-1) = 0.269 doubles
    the gradient of row 0 and column 0, and w10's score at its original value becomes 0.121,
    second only to w00's 0.134 (w01, w11 stay at 0.0672): keeping 2 brings w10 back.
    """
    net = nn.Linear(2, 2, bias=False).double()
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, -0.5], [-0.9, 0.5]]))
    return net, [(torch.eye(2, dtype=torch.float64), torch.tensor([0, 1]))]


def test_force_brings_back_a_weight_pruned_in_an_earlier_round():
    net, data = revival_case()
    first = prune(net, "force", math.sqrt(2), data=data, rounds=1)
    assert first["weight"].tolist() == [[True, True], [False, True]]
    scores = compute_scores(net, "force", masks=first, data=data)["weight"]
    expected = [
        [0.5 / (1 + math.e), 0.25 / (1 + math.e)],
        [0.45 / (1 + math.e), 0.25 / (1 + math.e)],
    ]
    assert torch.allclose(scores, torch.tensor(expected, dtype=torch.float64))
    final = prune(net, "force", 2, data=data, rounds=2)
    assert final["weight"].tolist() == [[True, False], [True, False]]  # w10 is back
    # Iterative SNIP scores the pruned w10 at |0 * g| = 0: it never returns
    snip = prune(net, "iter-snip", 2, data=data, rounds=2)
    assert not snip["weight"][1, 0]


class _DeadWeightsFirst(Scorer):
    """Pruned weights score highest: only revival lets them back."""

    name = "dead-weights-first-revival"
    description = "adversarial: pruned weights score highest"
    allows_revival = True

    def score(self, model, masks, context):
        return {
            name: torch.where(masks[name], w.detach().abs(), torch.full_like(w, 1e30))
            for name, w in self.weights(model, masks).items()
        }


def test_revival_is_what_the_flag_allows_and_never_past_the_starting_masks():
    net = two_layer(nn.ReLU())
    start = prune(net, "random", 1.5, seed=2)
    final = prune(net, _DeadWeightsFirst(), 4, rounds=2, masks=start)
    assert final.kept == kept_count(final.total, 4)
    assert all(not (final[n] & ~start[n]).any() for n in start)
    first_round = round_compressions(start.compression, 4, 2)[0]
    halfway = prune(net, _DeadWeightsFirst(), first_round, rounds=1, masks=start)
    revived = sum(int((final[n] & ~halfway[n]).sum()) for n in final)
    assert revived > 0
    # scoring starts from the original weights, not the zeroed ones of an earlier round
    scoring = prepare_scoring(net, "force", halfway, batches(), None, 0, "cpu")
    for name, weight in scoring.context.original_weights.items():
        assert torch.equal(weight, net.get_parameter(name).detach())


# --- NTK-SAP -----------------------------------------------------------------------------------


def output_change(weights, perturbation, gates, inputs) -> torch.Tensor:
    """J(c) of a two-layer linear network, written out: sum_x ||W2c W1c x - W2'c W1'c x||^2."""
    (w1, w2), (d1, d2), (c1, c2) = weights, perturbation, gates
    original = inputs @ (w1 * c1).T @ (w2 * c2).T
    moved = inputs @ ((w1 + d1) * c1).T @ ((w2 + d2) * c2).T
    return (original - moved).pow(2).sum()


def finite_differences(function, gates, step: float = 1e-6) -> list[torch.Tensor]:
    """Central differences of function(gates) in every entry of every gate tensor."""
    grads = []
    for index, gate in enumerate(gates):
        grad = torch.zeros_like(gate)
        for position in range(gate.numel()):
            values = []
            for sign in (1, -1):
                moved = [g.clone() for g in gates]
                moved[index].view(-1)[position] += sign * step
                values.append(function(moved))
            grad.view(-1)[position] = (values[0] - values[1]) / (2 * step)
        grads.append(grad)
    return grads


def test_ntk_sap_mask_gradient_matches_finite_differences_of_the_output_change():
    net = two_layer()
    masks = partial_mask(net)
    scoring = prepare_scoring(net, "ntk-sap", masks, None, (3,), 0, "cpu")
    scorer = scoring.scorer
    inputs, perturbation = scorer.draws(net, masks, scoring.context)
    names = list(masks)
    gates = [masks[n].double() for n in names]
    grads = scorer.mask_gradients(reinitialize(net, masks, 0), masks, inputs, perturbation)

    fresh = reinitialize(net, masks, 0)
    theta = [fresh.get_parameter(n).detach() for n in names]
    delta = [perturbation[n] for n in names]
    expected = finite_differences(lambda c: output_change(theta, delta, c, inputs), gates)
    for name, fd in zip(names, expected, strict=True):
        assert torch.allclose(grads[name], fd, rtol=1e-5, atol=1e-9)


def test_ntk_sap_sums_mask_gradients_over_fresh_initializations_in_a_fixed_order():
    """Per sample: a seed, the Gaussian inputs, then the perturbation, all from the generator."""
    net = two_layer()
    masks = partial_mask(net)
    scorer = get_scorer("ntk-sap")
    scores = compute_scores(net, scorer, masks=masks, input_shape=(3,), seed=4)
    scoring = prepare_scoring(net, scorer, masks, None, (3,), 4, "cpu")
    total = {name: torch.zeros_like(mask, dtype=torch.float64) for name, mask in masks.items()}
    for _ in range(scorer.samples):
        seed = int(torch.randint(0, 2**62, (1,), generator=scoring.context.generator))
        fresh = reinitialize(scoring.work, masks, seed)
        inputs, perturbation = scorer.draws(fresh, masks, scoring.context)
        for name, grad in scorer.mask_gradients(fresh, masks, inputs, perturbation).items():
            total[name] += grad
    for name in masks:
        assert torch.equal(scores[name], total[name].abs())
    assert inputs.shape == (scorer.examples, 3) and scorer.epsilon == 0.01 and scorer.samples == 5


def test_ntk_sap_normalizes_both_networks_with_the_unperturbed_batch_statistics():
    net = nn.Sequential(nn.Linear(3, 4, bias=False), nn.BatchNorm1d(4), nn.Linear(4, 2, bias=False))
    net = net.double()
    masks = Masks.dense(net)
    scorer = get_scorer("ntk-sap")
    generator = seeded(0)
    inputs = torch.randn(50, 3, generator=generator, dtype=torch.float64)
    perturbation = {
        n: 0.01 * torch.randn(m.shape, generator=generator, dtype=torch.float64)
        for n, m in masks.items()
    }
    work = reinitialize(net, masks, 1)
    grads = scorer.mask_gradients(work, masks, inputs, perturbation)
    w1, w2 = (work.get_parameter(n).detach() for n in masks)
    hidden = inputs @ w1.T
    mean, var = hidden.mean(0), hidden.var(0)  # the running statistics: unbiased variance
    bn = work[1]
    assert torch.allclose(bn.running_mean, mean) and torch.allclose(bn.running_var, var)

    def change(c):
        def forward(d1, d2):
            h = inputs @ ((w1 + d1) * c[0]).T
            return ((h - mean) / torch.sqrt(var + bn.eps)) @ ((w2 + d2) * c[1]).T

        zero = [torch.zeros_like(w1), torch.zeros_like(w2)]
        return (forward(*zero) - forward(*perturbation.values())).pow(2).sum()

    expected = finite_differences(change, [m.double() for m in masks.values()])
    for grad, fd in zip(grads.values(), expected, strict=True):
        assert torch.allclose(grad, fd, rtol=1e-5, atol=1e-9)


# --- PX ----------------------------------------------------------------------------------------


def test_px_scores_are_the_closed_form_path_kernel_saliency():
    net = two_layer(nn.ReLU())
    masks = partial_mask(net)
    data = batches()
    scores = compute_scores(net, "px", masks=masks, data=data)
    m1, m2 = (masks[n].double() for n in masks)
    w1, w2 = (net.get_parameter(n).detach() * masks[n] for n in masks)
    u1, u2 = w1**2, w2**2
    x = torch.cat([inputs for inputs, _ in data])
    gates = (x @ w1.T > 0).double()  # the ReLU gates of the real masked network
    s = ((x**2 @ m1.T) * gates @ m2.T).sum(0)  # sum_x z1(x): kept weights 1, input x^2
    hidden = u1 @ torch.ones(3, dtype=torch.float64)  # z2 = U2 U1 1, no ReLU
    grad2 = m2 * torch.outer(s, hidden)
    grad1 = m1 * torch.outer(s @ u2, torch.ones(3, dtype=torch.float64))
    first, second = masks
    assert torch.allclose(scores[first], u1 * grad1)
    assert torch.allclose(scores[second], u2 * grad2)
    assert (scores[first] >= 0).all() and (scores[second] >= 0).all()


def test_px_gates_functional_relus_too():
    class Functional(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.first, self.second = net[0], net[2]

        def forward(self, x):
            return self.second(torch.relu(self.first(x)))

    net = two_layer(nn.ReLU())
    data = batches()
    assert compute_scores(Functional(net), "px", data=data)["first.weight"].equal(
        compute_scores(net, "px", data=data)["0.weight"]
    )


# --- ProsPr ------------------------------------------------------------------------------------


def unrolled_loss(net, masks, gates, data, steps: int = 3, lr: float = 0.1) -> torch.Tensor:
    """L(theta_M): theta_0 = w * c, M plain SGD steps with pruned weights held at zero."""
    names = list(masks)
    weights = [net.get_parameter(n).detach() * masks[n] for n in names]  # pruned weights zero
    theta = [w * g for w, g in zip(weights, gates, strict=True)]
    x = torch.cat([inputs for inputs, _ in data])
    y = torch.cat([targets for _, targets in data])

    def loss(params):
        return nn.functional.cross_entropy(torch.tanh(x @ params[0].T) @ params[1].T, y)

    for _ in range(steps):
        params = [t.detach().requires_grad_() for t in theta]
        grads = torch.autograd.grad(loss(params), params)
        theta = [t - lr * g * masks[n] for t, g, n in zip(theta, grads, names, strict=True)]
    return loss(theta)


@pytest.mark.parametrize("pruned", [False, True], ids=["dense", "partial"])
def test_prospr_meta_gradient_matches_finite_differences_of_the_unrolled_loss(pruned):
    net = two_layer(nn.Tanh())
    data = batches()
    masks = partial_mask(net) if pruned else Masks.dense(net)
    scores = compute_scores(net, "prospr", masks=masks, data=data)
    gates = [m.double() for m in masks.values()]
    expected = finite_differences(lambda c: unrolled_loss(net, masks, c, data), gates)
    for name, fd in zip(masks, expected, strict=True):
        assert torch.allclose(scores[name], fd.abs(), rtol=1e-5, atol=1e-9)


# --- determinism and the untouched model ---------------------------------------------------------


@pytest.mark.parametrize("name", list(NEW))
def test_the_same_seed_gives_the_same_mask_bit_for_bit(name):
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)
    )
    generator = seeded(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
    x = torch.randn(9, 1, 4, 4, generator=seeded(1))
    data = [(x, torch.arange(9) % 3)]
    state = {k: v.clone() for k, v in net.state_dict().items()}

    def run(seed: int) -> Masks:
        return prune(net, name, 8, data=data, rounds=2, seed=seed, input_shape=(1, 4, 4))

    assert run(1) == run(1)
    if name == "ntk-sap":
        assert run(1) != run(2)
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    assert net.training


def test_ntk_sap_and_px_prune_zoo_models_to_the_target():
    model = pai.build_model("lenet5", "mnist", seed=0)
    x = torch.randn(8, 1, 28, 28, generator=seeded(3))
    data = [(x, torch.arange(8) % 10)]
    for scorer in (NtkSapScorer(samples=2, examples=10), "px"):
        masks = prune(model, scorer, 20, data=data, rounds=2)
        assert masks.kept == kept_count(masks.total, 20)
        assert all(mask.any() for mask in masks.values())
