"""pai.testing: the toy networks and batches, and check_scorer on good and broken scorers."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from torch import Tensor, nn

import pai
from pai.core.errors import PaiError
from pai.pruning.masks import Masks, prunable_parameters
from pai.pruning.registry import Scorer, ScoringContext, available_scorers
from pai.testing import (
    TOY_MODELS,
    ModelState,
    ScorerCheckError,
    check_scorer,
    toy_batches,
    toy_conv_net,
    toy_mlp,
)

# --- toy networks and batches -------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TOY_MODELS))
def test_toy_models_are_seeded_and_leave_the_global_rng_alone(name):
    build = TOY_MODELS[name]
    rng = torch.get_rng_state()
    first, again, other = build(0), build(0), build(1)
    assert torch.equal(torch.get_rng_state(), rng)
    for key, value in first.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    assert not torch.equal(first.fc.weight, other.fc.weight)


@pytest.mark.parametrize("name", list(TOY_MODELS))
def test_toy_batches_fit_the_model_and_cover_every_class(name):
    model = TOY_MODELS[name](0)
    batches = toy_batches(model, seed=3)
    assert [len(y) for _, y in batches] == [5, 3]
    assert torch.cat([y for _, y in batches]).tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    assert all(x.shape[1:] == model.input_shape for x, _ in batches)
    assert model(batches[0][0]).shape == (5, model.num_classes)
    again = toy_batches(model, seed=3)
    assert all(torch.equal(x, x2) for (x, _), (x2, _) in zip(batches, again, strict=True))
    assert not torch.equal(batches[0][0], toy_batches(model, seed=4)[0][0])


def test_toy_sizes_are_those_documented():
    def weights(model: nn.Module) -> int:
        return sum(p.numel() for p in prunable_parameters(model).values())

    assert weights(toy_mlp()) == 16 * 8 + 8 * 3
    assert weights(toy_conv_net()) == 36 + 72 + 6


def test_toy_batches_follow_the_model_dtype_and_need_known_classes():
    model = toy_mlp().double()
    (x, _), _ = toy_batches(model)
    assert x.dtype == torch.float64
    (x, y), _ = toy_batches(nn.Linear(4, 2), input_shape=(4,), num_classes=2)
    assert x.shape == (5, 4) and y.tolist() == [0, 1, 0, 1, 0]
    with pytest.raises(PaiError, match="num_classes="):
        toy_batches(nn.Linear(4, 2), input_shape=(4,))
    with pytest.raises(PaiError, match="input_shape="):
        toy_batches(nn.Linear(4, 2), num_classes=2)


def test_model_state_sees_every_kind_of_change():
    model = toy_conv_net()
    state = ModelState.of(model)
    assert state.first_change(ModelState.of(model)) is None
    model.features.bn1.eval()  # toy models are built in train mode, as zoo models are
    assert state.first_change(ModelState.of(model)) == (
        "module 'features.bn1' was switched to eval mode"
    )
    model.train()
    model.fc.bias.requires_grad_(False)
    assert state.first_change(ModelState.of(model)) == "requires_grad of 'fc.bias' changed to False"
    model.fc.bias.requires_grad_(True)
    model.fc.weight.grad = torch.zeros_like(model.fc.weight)
    assert "the .grad of 'fc.weight' changed" in state.first_change(ModelState.of(model))
    model.fc.weight.grad = None
    with torch.no_grad():
        model.features.bn2.running_var.add_(1)
    assert state.first_change(ModelState.of(model)) == (
        "buffer 'features.bn2.running_var' changed value"
    )


# --- every built-in keeps the protocol ---------------------------------------------------------


@pytest.mark.parametrize("name", available_scorers())
def test_every_registered_scorer_passes(name):
    check_scorer(name, device="cpu")


def test_classes_instances_and_other_models_are_accepted():
    check_scorer(_Magnitude, device="cpu")
    check_scorer(_Magnitude(), models=[pai.build_model("lenet5", "mnist", seed=2)], device="cpu")


# --- broken scorers, each caught with its message ----------------------------------------------


class _Magnitude(Scorer):
    """|w|: a correct scorer that the broken ones below alter in one way each."""

    name = "toy"
    description = "|w|"

    def score(self, model: nn.Module, masks: Masks, context: ScoringContext) -> dict[str, Tensor]:
        return {name: w.detach().abs() for name, w in self.weights(model, masks).items()}


class _WrongShape(_Magnitude):
    def score(self, model, masks, context):
        return {name: s.flatten() for name, s in super().score(model, masks, context).items()}


class _MissingName(_Magnitude):
    def score(self, model, masks, context):
        scores = super().score(model, masks, context)
        del scores["fc.weight"]
        return scores


class _ExtraName(_Magnitude):
    def score(self, model, masks, context):
        return {**super().score(model, masks, context), "fc.bias": model.fc.bias.detach()}


class _NanOnLiveWeight(_Magnitude):
    def score(self, model, masks, context):
        scores = super().score(model, masks, context)
        scores["fc.weight"] = scores["fc.weight"].clone()
        scores["fc.weight"].view(-1)[masks["fc.weight"].view(-1).nonzero()[0]] = math.nan
        return scores


class _NanOnPrunedWeights(_Magnitude):
    """NaN wherever a weight is pruned: allowed, pruned weights are never ranked."""

    def score(self, model, masks, context):
        scores = super().score(model, masks, context)
        return {name: s.masked_fill(~masks[name], math.nan) for name, s in scores.items()}


class _NanOnceHalfPruned(_Magnitude):
    """Breaks only under a mask with pruned weights: check_scorer must try one."""

    def score(self, model, masks, context):
        scores = super().score(model, masks, context)
        return {n: s if masks[n].all() else s.fill_(math.inf) for n, s in scores.items()}


class _IntegerScores(_Magnitude):
    def score(self, model, masks, context):
        return {name: (s * 100).long() for name, s in super().score(model, masks, context).items()}


class _OnAnotherDevice(_Magnitude):
    def score(self, model, masks, context):
        return {name: torch.empty(m.shape, device="meta") for name, m in masks.items()}


class _NotADict(_Magnitude):
    def score(self, model, masks, context):
        return list(super().score(model, masks, context).values())


class _MutatesWeights(_Magnitude):
    def score(self, model, masks, context):
        scores = super().score(model, masks, context)
        with torch.no_grad():
            model.fc.weight.mul_(2)
        return scores


class _SwitchesToTrain(_Magnitude):
    def score(self, model, masks, context):
        model.train()
        return super().score(model, masks, context)


class _UpdatesRunningStatistics(_Magnitude):
    """Runs a forward pass in train mode and restores the mode: BatchNorm buffers move."""

    needs_data = True

    def score(self, model, masks, context):
        model.train()
        with torch.no_grad():
            model(context.data[0][0])
        model.eval()
        return super().score(model, masks, context)


class _LeavesGradients(_Magnitude):
    needs_data = True

    def score(self, model, masks, context):
        sum(self.batch_losses(model, context)).backward()
        return {n: (w * w.grad).detach().abs() for n, w in self.weights(model, masks).items()}


class _EditsTheMasks(_Magnitude):
    def score(self, model, masks, context):
        masks["fc.weight"].zero_()
        return super().score(model, masks, context)


class _GlobalRandom(_Magnitude):
    def score(self, model, masks, context):
        return {name: torch.rand(m.shape, device=context.device) for name, m in masks.items()}


class _NeedsDataNotABool(_Magnitude):
    needs_data = "yes"


class _NeedsTrainingNotABool(_Magnitude):
    needs_training = 1


@pytest.mark.parametrize(
    ("scorer", "message"),
    [
        (_WrongShape, r"returned scores of shape \(\d+,\) for 'features.1.weight', whose shape"),
        (_MissingName, r"returned no scores for \['fc.weight'\]"),
        (_ExtraName, r"returned scores for \['fc.bias'\], which are not masked"),
        (_NanOnLiveWeight, r"non-finite scores \(NaN, inf\) to 'fc.weight' \(toy_mlp, dense"),
        (_NanOnceHalfPruned, r"non-finite .* \(toy_mlp, half pruned mask\)"),
        (_IntegerScores, r"returned torch.int64 scores for '.*'; scores must be floating"),
        (_OnAnotherDevice, r"on meta, not on the scoring device cpu"),
        (_NotADict, r"returned a list, not a dict"),
        (_MutatesWeights, r"modified the model it scored: parameter 'fc.weight' changed value"),
        (_SwitchesToTrain, r"modified the model it scored: the model was switched to train mode"),
        (
            _UpdatesRunningStatistics,
            r"buffer 'features.bn1.running_mean' changed value; .*\(toy_conv_net, dense mask\)",
        ),
        (_LeavesGradients, r"the .grad of '.*' changed \(use torch.autograd.grad"),
        (_EditsTheMasks, r"modified the masks it was given"),
        (_GlobalRandom, r"different scores to '.*' in two calls with the same seed"),
        (_NeedsDataNotABool, r"'needs_data' must be a bool"),
        (_NeedsTrainingNotABool, r"'needs_training' must be a bool"),
    ],
)
def test_a_broken_scorer_fails_with_a_message_naming_it_and_the_problem(scorer, message):
    with pytest.raises(ScorerCheckError, match=message) as caught:
        check_scorer(scorer, device="cpu")
    assert isinstance(caught.value, AssertionError)
    assert "\n" not in str(caught.value)
    assert "'toy'" in str(caught.value)


def test_scores_may_be_anything_on_pruned_weights():
    check_scorer(_NanOnPrunedWeights, device="cpu")


def test_unknown_names_fail_the_check():
    with pytest.raises(ScorerCheckError, match="unknown scorer 'nope'"):
        check_scorer("nope", device="cpu")


def test_exported_lazily_from_pai():
    assert pai.check_scorer is check_scorer
    code = "import sys, pai; print('pai.testing' in sys.modules, 'torch' in sys.modules)"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert loaded.stdout.split() == ["False", "False"]  # import pai stays cheap
