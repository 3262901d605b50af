"""Helpers for testing a scorer plugin: seeded toy networks, toy batches, and `check_scorer`.

A plugin's test is three lines::

    from pai.testing import check_scorer

    def test_my_scorer_keeps_the_protocol():
        check_scorer(MyScorer())

`check_scorer` scores each toy network the way `pai.prune` does (on the prune driver's private
masked copy, with its `ScoringContext`), dense and partially pruned, and raises
`ScorerCheckError` naming the scorer and the first rule of the protocol (scorers/README.md) it
breaks. The toy networks are zoo-style models (`features`, then the classifier `fc`) that
record `input_shape` and `num_classes`, initialized as the zoo is, from a seeded generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from pai.core.devices import resolve_device
from pai.core.errors import PaiError
from pai.models import BasicBlock, ZooModel, _initialize, model_input_shape
from pai.pruning.driver import Scoring, check_scores, prepare_scoring
from pai.pruning.masks import Masks, keep_topk, prunable_parameters
from pai.pruning.registry import Scorer, _instance, get_scorer

Batches = list[tuple[Tensor, Tensor]]


class ScorerCheckError(AssertionError):
    """A scorer breaks the scorer protocol; the message names the scorer and the rule."""


def _seeded(build: Callable[[], ZooModel], seed: int) -> ZooModel:
    """`build()` constructed on the meta device, then initialized from `seed` as the zoo is."""
    with torch.device("meta"):
        model = build()
    model.to_empty(device="cpu")
    _initialize(model, torch.Generator().manual_seed(seed))
    return model


def toy_mlp(seed: int = 0) -> ZooModel:
    """Flatten, Linear 16 -> 8, ReLU, Linear 8 -> 3 (`fc`), for 1x4x4 inputs: 152 weights."""

    def build() -> ZooModel:
        features = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU())
        return ZooModel(features, nn.Linear(8, 3), (1, 4, 4), 3)

    return _seeded(build, seed)


def toy_conv_net(seed: int = 0) -> ZooModel:
    """Conv 1 -> 4 (3x3, no bias) + BatchNorm, conv 4 -> 2 + BatchNorm, global mean pool,
    Linear 2 -> 3 (`fc`), for 1x6x6 inputs: 36 + 72 + 6 = 114 weights."""

    def build() -> ZooModel:
        features = nn.Sequential()
        features.add_module("conv1", nn.Conv2d(1, 4, 3, bias=False))
        features.add_module("bn1", nn.BatchNorm2d(4))
        features.add_module("relu1", nn.ReLU())
        features.add_module("conv2", nn.Conv2d(4, 2, 3, bias=False))
        features.add_module("bn2", nn.BatchNorm2d(2))
        features.add_module("relu2", nn.ReLU())
        features.add_module("pool", nn.AdaptiveAvgPool2d(1))
        features.add_module("flatten", nn.Flatten())
        return ZooModel(features, nn.Linear(2, 3), (1, 6, 6), 3)

    return _seeded(build, seed)


def toy_residual_net(seed: int = 0) -> ZooModel:
    """A 3x3 conv stem 1 -> 4 + BatchNorm, one ResNet basic block 4 -> 8 at stride 2 (so with
    its 1x1 projection shortcut), global mean pool, Linear 8 -> 3 (`fc`), for 1x6x6 inputs."""

    def build() -> ZooModel:
        features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1, bias=False),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            BasicBlock(4, 8, stride=2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        return ZooModel(features, nn.Linear(8, 3), (1, 6, 6), 3)

    return _seeded(build, seed)


TOY_MODELS: dict[str, Callable[[int], ZooModel]] = {
    "toy_mlp": toy_mlp,
    "toy_conv_net": toy_conv_net,
    "toy_residual_net": toy_residual_net,
}


def toy_batches(
    model: nn.Module,
    *,
    sizes: Sequence[int] = (5, 3),
    seed: int = 0,
    input_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
) -> Batches:
    """(inputs, targets) batches for `model`, of the sizes given (unequal by default, so that
    a per-batch mean differs from the mean over all examples).

    Inputs are standard normal, drawn from a generator seeded with `seed`, of the model's input
    shape (`input_shape`, else the one the model records) and dtype, on its device. Targets
    cycle through the classes (`num_classes`, else the model's `num_classes`): 0, 1, 2, 0, ...
    """
    shape = model_input_shape(model, input_shape)
    classes = num_classes if num_classes is not None else getattr(model, "num_classes", None)
    if not isinstance(classes, int) or classes < 1:
        raise PaiError(
            f"the number of classes of {type(model).__name__} is not known ({classes!r}); "
            "pass num_classes= as a whole number >= 1"
        )
    if not sizes or any(size < 1 for size in sizes):
        raise PaiError(f"batch sizes must be whole numbers >= 1, got {tuple(sizes)!r}")
    reference = next((p for p in model.parameters() if p.is_floating_point()), None)
    dtype = reference.dtype if reference is not None else torch.get_default_dtype()
    device = reference.device if reference is not None else torch.device("cpu")
    total = sum(sizes)
    inputs = torch.randn(total, *shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    targets = torch.arange(total) % classes
    return list(
        zip(
            inputs.to(device).split(list(sizes)), targets.to(device).split(list(sizes)), strict=True
        )
    )


def _layout(tensor: Tensor) -> tuple[torch.dtype, torch.device, torch.Size]:
    return tensor.dtype, tensor.device, tensor.shape


@dataclass(frozen=True)
class ModelState:
    """What scoring must leave unchanged: every parameter and buffer (values, dtype, device),
    every gradient, every `requires_grad` flag and every module's train/eval mode."""

    tensors: dict[str, Tensor]
    grads: dict[str, Tensor | None]
    requires_grad: dict[str, bool]
    training: dict[str, bool]

    @classmethod
    def of(cls, model: nn.Module) -> ModelState:
        params = dict(model.named_parameters())
        tensors = {f"parameter {name!r}": p.detach().clone() for name, p in params.items()}
        tensors.update(
            {f"buffer {name!r}": b.detach().clone() for name, b in model.named_buffers()}
        )
        return cls(
            tensors=tensors,
            grads={
                name: None if p.grad is None else p.grad.detach().clone()
                for name, p in params.items()
            },
            requires_grad={name: p.requires_grad for name, p in params.items()},
            training={name: module.training for name, module in model.named_modules()},
        )

    def first_change(self, later: ModelState) -> str | None:
        """A description of the first difference between this state and `later`, or None."""
        if self.tensors.keys() != later.tensors.keys():
            return "its parameters or buffers were added or removed"
        for key, before in self.tensors.items():
            after = later.tensors[key]
            if _layout(before) != _layout(after):
                return f"{key} changed dtype, device or shape"
            if not torch.equal(before, after):
                return f"{key} changed value"
        for name, before in self.requires_grad.items():
            if later.requires_grad[name] != before:
                return f"requires_grad of {name!r} changed to {later.requires_grad[name]}"
        for name, before in self.grads.items():
            after = later.grads[name]
            if (before is None) != (after is None) or (
                before is not None and not torch.equal(before, after)
            ):
                return f"the .grad of {name!r} changed (use torch.autograd.grad, not backward)"
        for name, before in self.training.items():
            if later.training[name] != before:
                module = f"module {name!r}" if name else "the model"
                return (
                    f"{module} was switched to {'train' if later.training[name] else 'eval'} mode"
                )
        return None


def _partially_pruned(model: nn.Module, seed: int) -> Masks:
    """Half of every layer's weights pruned, at positions drawn from a generator seeded with
    `seed`."""
    generator = torch.Generator().manual_seed(seed)
    scores = {
        name: torch.rand(p.shape, generator=generator)
        for name, p in prunable_parameters(model).items()
    }
    return keep_topk(scores, 2, "layerwise")


def _changed_inputs(before: tuple[Masks, Batches | None], scoring: Scoring) -> str | None:
    """Which of the masks or batches given to the scorer it changed, or None."""
    masks, data = before
    if any(not torch.equal(masks[name], scoring.masks[name]) for name in masks):
        return "the masks it was given"
    if data is not None and any(
        not (torch.equal(x, x_now) and torch.equal(y, y_now))
        for (x, y), (x_now, y_now) in zip(data, scoring.context.data, strict=True)
    ):
        return "the data batches it was given"
    return None


class _Check:
    """One scorer checked on one model and one mask; every failure names both."""

    def __init__(self, scorer: Scorer, where: str):
        self.scorer = scorer
        self.where = where

    def fail(self, problem: str) -> ScorerCheckError:
        return ScorerCheckError(f"{problem} ({self.where})")

    def score(self, scoring: Scoring) -> dict[str, Tensor]:
        """`score()` on the driver's prepared copy, with the checks on what it returns."""
        scores = self.scorer.score(scoring.work, scoring.masks, scoring.context)
        if not isinstance(scores, dict):
            raise self.fail(
                f"scorer {self.scorer.name!r} returned a {type(scores).__name__}, not a dict "
                "of tensors by parameter name"
            )
        for name, score in scores.items():
            if not isinstance(score, Tensor):
                raise self.fail(
                    f"scorer {self.scorer.name!r} returned a {type(score).__name__} for "
                    f"{name!r}, not a tensor"
                )
        device = torch.empty(0, device=scoring.context.device).device
        for name, score in scores.items():
            if not score.is_floating_point():
                raise self.fail(
                    f"scorer {self.scorer.name!r} returned {score.dtype} scores for {name!r}; "
                    "scores must be floating (return float64 for integer-valued scores)"
                )
            if score.device != device:
                raise self.fail(
                    f"scorer {self.scorer.name!r} returned scores for {name!r} on {score.device}, "
                    f"not on the scoring device {device}"
                )
        try:
            check_scores(scores, scoring.masks, self.scorer)
        except PaiError as error:
            raise self.fail(str(error)) from None
        return scores

    def unchanged(self, scoring: Scoring) -> dict[str, Tensor]:
        """`score` once, and ScorerCheckError if it changed the model, the masks or the data."""
        model = ModelState.of(scoring.work)
        inputs = (
            Masks({name: m.clone() for name, m in scoring.masks.items()}),
            None
            if scoring.context.data is None
            else [(x.clone(), y.clone()) for x, y in scoring.context.data],
        )
        scores = self.score(scoring)
        change = model.first_change(ModelState.of(scoring.work))
        if change is not None:
            raise self.fail(
                f"scorer {self.scorer.name!r} modified the model it scored: {change}; "
                "score() must leave the model as it was given"
            )
        changed = _changed_inputs(inputs, scoring)
        if changed is not None:
            raise self.fail(f"scorer {self.scorer.name!r} modified {changed}")
        return scores

    def deterministic(self, first: dict[str, Tensor], second: dict[str, Tensor], masks: Masks):
        """ScorerCheckError unless two scorings with the same seed agree on every live weight."""
        for name, mask in masks.items():
            if not torch.equal(first[name][mask], second[name][mask]):
                raise self.fail(
                    f"scorer {self.scorer.name!r} gave different scores to {name!r} in two "
                    "calls with the same seed; draw every random number from context.generator"
                )


def _resolve(scorer: str | Scorer | type[Scorer]) -> Scorer:
    """The scorer named, given, or instantiated from the class given, protocol-checked."""
    try:
        resolved = get_scorer(scorer) if isinstance(scorer, str) else _instance(scorer)
    except PaiError as error:
        raise ScorerCheckError(str(error)) from None
    needs_training = getattr(resolved, "needs_training", False)
    if not isinstance(needs_training, bool):
        raise ScorerCheckError(f"scorer {resolved.name!r}: 'needs_training' must be a bool")
    return resolved


def check_scorer(
    scorer: str | Scorer | type[Scorer],
    *,
    models: Sequence[nn.Module] | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> None:
    """Raise `ScorerCheckError` unless `scorer` keeps the scorer protocol (scorers/README.md).

    `scorer` is a registered name, a `Scorer` instance, or a class (instantiated without
    arguments). On each of `models` (default: the toy networks of `TOY_MODELS`, seeded with
    `seed`; others must record `input_shape` and `num_classes`, as zoo models do) and under a
    dense and a half-pruned mask, it is scored as `pai.prune` scores it, on `device` (default:
    CUDA when available), with `toy_batches` as data when it `needs_data`. Checked: the
    protocol attributes; `score()` returns a dict with exactly the mask's names, each a
    floating tensor of the parameter's shape on the scoring device, finite on every live
    weight (a pruned weight is never ranked, so its score may be anything); the model, masks
    and data are unchanged by scoring; and a second scoring from a fresh copy and a fresh
    generator seeded alike gives the same live scores bit for bit. Scorers that train
    (`needs_training`) are checked on their attributes and on what `score()` returns only.
    """
    scorer = _resolve(scorer)
    device = resolve_device(device)
    if models is None:
        named = {name: build(seed) for name, build in TOY_MODELS.items()}
    else:
        named = {f"models[{i}]": model for i, model in enumerate(models)}
    for model_name, model in named.items():
        data = toy_batches(model, seed=seed) if scorer.needs_data else None
        for mask_name, masks in (
            ("dense", Masks.dense(model)),
            ("half pruned", _partially_pruned(model, seed)),
        ):
            check = _Check(scorer, f"{model_name}, {mask_name} mask")
            prepare = partial(prepare_scoring, model, scorer, masks, data, None, seed, device)
            if scorer.needs_training:
                check.score(prepare())
                continue
            scoring = prepare()
            first = check.unchanged(scoring)
            check.deterministic(first, check.score(prepare()), scoring.masks)
