"""Learned supermasks: a mask trained over frozen random weights, which are never trained.

Zhou, Lan, Liu & Yosinski (2019, "Deconstructing lottery tickets", Sec. 5) train one score s
per weight with the weights frozen at their initialization: the forward pass uses w * m,
m ~ Bernoulli(sigmoid(s)) sampled anew at every step, and the gradient reaches s straight
through the sample (dL/ds = dL/dm * sigmoid'(s)). Ramanujan et al. (2020, "What's hidden in a
randomly weighted neural network?", edge-popup) keep instead the k weights of largest |s| in
each layer and pass the gradient straight through the top-k (dL/ds = dL/d(w m) * w). Both are
here (`rule`), trained by the comparison's own loop, optimizer and budget on the scores only;
biases and normalization parameters stay frozen too, BatchNorm statistics are those of the
masked network.

The ticket at compression c: the seed's initial weights (the frozen ones) under the learned
mask. `edge-popup` keeps, in every layer, the count the scope's allocator gives it (the same
fraction of each layer for `global` and `layerwise`, as in the paper), during the search and
in the ticket. `bernoulli` learns its own density; the ticket keeps the c-compression top of
s under the scope (ranked jointly for `global`), and its scores start at logit(1 / c) (plus a
little seeded noise) so that the sampled masks start at the ticket's density. The search cost
is the epochs and steps the scores trained. The ticket's untrained test accuracy
(`untrained_test_accuracy` in `runs.csv`) is the supermask's.

Learning rates: edge-popup learns at the weights' usual SGD rate (0.1 to 0.5 on LeNet-300-100);
the Bernoulli rule's gradient carries sigmoid'(s) <= 1/4 and needs rates near 10 to 50
(`--supermask-lr`). On MNIST LeNet-300-100, 3 epochs of 5,000 examples give edge-popup about
90% test accuracy at half density, Bernoulli about 73% at lr 50; Bernoulli's top-k ticket
falls apart at compression 10, where its sampled masks drift away from the ticket's density.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from pai.core import seeds
from pai.pruning.allocators import keep_allocated, layer_counts, resolve_allocator
from pai.pruning.masks import Masks, keep_counts, layerwise_counts, prunable_parameters
from pai.pruning.registry import Scorer, ScoringContext
from pai.search.protocol import SearchContext, SearchRequest, TicketSearch
from pai.search.ticket import SearchCost, Ticket
from pai.training.config import TrainConfig
from pai.training.loop import state_copy, train
from scorers.supermask_options import SupermaskOptions


class ScoredNetwork(nn.Module):
    """`base` with frozen weights, whose masked weights are w * m(s): only the scores train.

    Training mode draws the mask of the rule (edge-popup's top-k of |s| with counts `counts`,
    or a Bernoulli(sigmoid(s)) sample from `generator`) with a straight-through gradient to s;
    eval mode uses `mask()`, the ticket's mask, so evaluations during the search are those of
    the ticket the search would return at that point.
    """

    def __init__(
        self,
        base: nn.Module,
        scores: dict[str, Tensor],
        rule: str,
        final: Callable[[dict[str, Tensor]], Masks],
        counts: dict[str, int] | None,
        generator: torch.Generator,
    ):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.names = list(scores)
        self.scores = nn.ParameterList([nn.Parameter(scores[n].clone()) for n in self.names])
        for index, name in enumerate(self.names):
            self.register_buffer(f"weight{index}", base.get_parameter(name).detach().clone())
        self.rule, self.final, self.counts, self.generator = rule, final, counts, generator

    def score_dict(self) -> dict[str, Tensor]:
        return {n: s.detach() for n, s in zip(self.names, self.scores, strict=True)}

    def mask(self) -> Masks:
        """The ticket's mask for the current scores."""
        return self.final(self.score_dict())

    def _training_masks(self) -> list[Tensor]:
        if self.rule == "edge-popup":
            magnitudes = {n: v.abs() for n, v in self.score_dict().items()}
            top = keep_counts(magnitudes, self.counts)
            return [  # the gradient reaches s through |s|, the quantity ranked
                top[n].to(s.dtype) + s.abs() - s.abs().detach()
                for n, s in zip(self.names, self.scores, strict=True)
            ]
        out = []
        for s in self.scores:
            p = torch.sigmoid(s)
            u = torch.rand(s.shape, generator=self.generator, dtype=torch.float32)
            sample = (u.to(s.device) < p.detach()).to(s.dtype)
            out.append(sample + p - p.detach())
        return out

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            masks = self._training_masks()
        else:
            ticket = self.mask()
            masks = [ticket[n].to(x.dtype) for n in self.names]
        weights = {
            n: getattr(self, f"weight{i}") * m
            for i, (n, m) in enumerate(zip(self.names, masks, strict=True))
        }
        return functional_call(self.base, weights, (x,))


class SupermaskSearch(Scorer, TicketSearch):
    """A learned supermask (Zhou et al. 2019; Ramanujan et al. 2020): see the module docstring.

    `score` gives the scores a search starts from (edge-popup's Kaiming-uniform draw); the
    ticket comes from `find`, which trains them.
    """

    name = "supermask"
    needs_data = True
    needs_training = True
    default_rounds = 1
    description = "a mask trained over frozen initial weights (edge-popup or Bernoulli)"
    Options = SupermaskOptions

    def score(self, model: nn.Module, masks: Masks, context: ScoringContext) -> dict[str, Tensor]:
        weights = self.weights(model, masks)
        return {
            n: s.to(context.device) for n, s in _initial_scores(weights, context.generator).items()
        }

    def find(self, request: SearchRequest, context: SearchContext) -> Ticket:
        """Train the scores of `request`'s seeded model on `context.data`; its supermask ticket."""
        return self.search(
            context.build(request),
            context.data,
            request.compression,
            train_config=request.train,
            scope=request.scope,
            options=request.options or SupermaskOptions(),
            seed=request.seed,
            device=context.device,
            progress=context.progress,
        )

    def search(
        self,
        model: nn.Module,
        data,
        compression: float,
        *,
        train_config: TrainConfig,
        scope: str = "global",
        options: SupermaskOptions | None = None,
        seed: int = 0,
        device: torch.device | str | None = None,
        progress: bool | None = None,
    ) -> Ticket:
        """The supermask of `model` (not changed) at `compression`, its scores trained under
        `train_config` (budget and learning rate replaced by the options' when given)."""
        options = options or SupermaskOptions()
        device = torch.device(device) if device is not None else data.train.x.device
        initial = state_copy(model)
        base = copy.deepcopy(model).to(device)
        weights = prunable_parameters(base)
        shapes = {n: tuple(w.shape) for n, w in weights.items()}
        generator = torch.Generator().manual_seed(seeds.supermask_seed(seed))
        if options.rule == "edge-popup":
            counts = _edge_popup_counts(shapes, compression, scope)
            scores = _initial_scores(weights, generator)

            def final(s: dict[str, Tensor]) -> Masks:
                return keep_counts({n: v.abs() for n, v in s.items()}, counts)
        else:
            counts = None
            logit = math.log(1 / (compression - 1)) if compression > 1 else 4.0
            scores = {
                n: logit + 0.01 * torch.randn(shape, generator=generator)
                for n, shape in shapes.items()
            }

            def final(s: dict[str, Tensor]) -> Masks:
                return keep_allocated(s, compression, scope)

        scores = {n: s.to(device) for n, s in scores.items()}
        scored = ScoredNetwork(base, scores, options.rule, final, counts, generator)
        config = train_config.replace(
            budget=options.budget or train_config.budget,
            lr=options.lr if options.lr is not None else train_config.lr,
        )
        result = train(scored, data, config, device=device, progress=progress)
        masks = scored.mask().to("cpu")
        source = {
            **initial,
            **{k: v.cpu() for k, v in base.state_dict().items() if k not in weights},
        }
        start = copy.deepcopy(model)
        start.load_state_dict(source)
        masks.apply(start)
        cost = SearchCost(
            epochs=float(result.metrics["epochs"]), steps=int(result.metrics["steps"])
        )
        return Ticket(masks, state_copy(start), cost, source_state=source)


def _initial_scores(weights: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
    """Kaiming-uniform scores, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (edge-popup's init)."""
    scores = {}
    for name, weight in weights.items():
        bound = 1 / math.sqrt(weight[0].numel())
        scores[name] = (2 * torch.rand(weight.shape, generator=generator) - 1) * bound
    return scores


def _edge_popup_counts(shapes, compression: float, scope: str) -> dict[str, int]:
    """Per-layer kept counts: the scope's allocator's, or the same fraction of every layer
    for the joint `global` scope (edge-popup's rule)."""
    if resolve_allocator(scope).joint:
        return layerwise_counts({n: math.prod(s) for n, s in shapes.items()}, compression)
    return layer_counts(scope, shapes, compression)
