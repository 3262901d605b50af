"""The ticket of every run of a comparison: its method's search, then its variant.

An original ticket is found once and kept for its variants: `shuffle` and `reinit` are
ablations of it (`pai.search.ablations`, seeded by `pai.core.seeds.ablation_seed`), `invert`
is the method's inverted search. The dense reference is the seed's initial weights, or a
method's own dense training under the same budget when it made one (IMP's level 0).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pai.core import seeds
from pai.core.errors import PaiError
from pai.experiments.compare.config import CompareConfig, RunSpec
from pai.experiments.compare.plan import plan_runs, searches_of
from pai.pruning.masks import Masks
from pai.report.schema import DENSE, ORIGINAL
from pai.search.protocol import SearchContext, SearchRequest
from pai.search.ticket import Ticket
from pai.training.checkpoint import DEFAULT_POLICY, CheckpointPolicy
from pai.training.config import TrainConfig


class TicketFinder:
    """Finds the ticket of every run of a comparison, sharing what several runs share.

    The search context's cache holds each seed's scoring batch and IMP run; originals are kept
    for their variants. `checkpoint` is how every run trained for the comparison checkpoints.
    """

    def __init__(
        self,
        config: CompareConfig,
        data,
        store: Path,
        *,
        device: torch.device,
        progress: bool | None = None,
        checkpoint: CheckpointPolicy | None = DEFAULT_POLICY,
    ):
        self.config = config
        self.context = SearchContext(data, device, store, progress, checkpoint=checkpoint)
        self.searches = searches_of(config)
        self._originals: dict[tuple, Ticket] = {}

    def request(self, spec: RunSpec, method: str | None = None) -> SearchRequest:
        """The search request of `spec` (or of `method` at `spec`'s seed and compression)."""
        _, options = self.searches[method or spec.method]
        return self.config.request(options, spec.compression, spec.seed)

    def build(self, spec: RunSpec) -> nn.Module:
        """The zoo model of `spec`'s seed."""
        from pai.models import build_model

        return build_model(self.config.model, self.config.dataset, seed=seeds.model_init(spec.seed))

    def prepare(self, specs: Sequence[RunSpec], *, stack_size: int | None = None) -> None:
        """Let each method compute, side by side, what the tickets of `specs` share before they
        are found one by one (`TicketSearch.prepare`: IMP's levels of every seed in lockstep)."""
        requests: dict[str, list[SearchRequest]] = {}
        for spec in specs:
            if spec.method != DENSE and spec.variant != "invert":
                requests.setdefault(spec.method, []).append(self.request(spec))
        for method, wanted in requests.items():
            search, _ = self.searches[method]
            search.prepare(wanted, self.context, stack_size=stack_size)

    def find(self, spec: RunSpec) -> Ticket:
        """The ticket of `spec`: its method's original ticket, transformed by its variant."""
        from pai.search.ablations import ablate

        if spec.method == DENSE:
            return self.dense(spec)
        search, _ = self.searches[spec.method]
        request = self.request(spec)
        if spec.variant == "invert":
            return search.inverted().find(request, self.context)
        key = (spec.method, spec.compression, spec.seed)
        if key not in self._originals:
            self._originals[key] = search.find(request, self.context)
        original = self._originals[key]
        if spec.variant == ORIGINAL:
            return original
        return ablate(original, spec.variant, self.build(spec), seeds.ablation_seed(spec.seed))

    def dense(self, spec: RunSpec) -> Ticket:
        """The initial weights, no mask; a method's dense training when it made the same one."""
        model = self.build(spec)
        ticket = Ticket(Masks.dense(model), model.state_dict())
        for method, (search, _) in self.searches.items():
            stored = search.dense_training(self.request(spec, method), self.context)
            if stored is not None:
                ticket.trained = stored
                break
        return ticket


def find_ticket(
    method: str,
    model: str,
    dataset: str,
    compression: float,
    *,
    data,
    train: TrainConfig,
    seed: int = 0,
    variant: str = ORIGINAL,
    scope: str = "global",
    per_class: int = 10,
    compressions: Iterable[float] = (),
    options: Mapping[str, Any] | None = None,
    store: str | Path = "runs",
    device: torch.device | str | None = None,
) -> Ticket:
    """The ticket `method` finds for a zoo model at `compression`, as `compare` finds it.

    `data` is a loaded `pai.data.loading.Dataset`; `train` is used by methods that train
    (early-bird, IMP, whose levels are stored under `store`); `options` are the method's
    options by field name. `variant` is `original` or a sanity check. IMP reaches
    `compression` and every compression in `compressions` exactly (as `compare` does with all
    of its compressions, so passing them finds the IMP run `compare` stored).
    """
    from pai.core.devices import resolve_device

    config = CompareConfig(
        model,
        dataset,
        (method,),
        tuple(dict.fromkeys([float(compression), *map(float, compressions)])),
        train,
        seeds=(seed,),
        sanity=() if variant == ORIGINAL else (variant,),
        scope=scope,
        per_class=per_class,
        options={method: dict(options)} if options else {},
    )
    specs = [
        s
        for s in plan_runs(config)
        if s.method == method and s.variant == variant and s.compression == float(compression)
    ]
    if not specs:
        raise PaiError(f"sanity check {variant!r} does not apply to {method!r}, which trains")
    device = resolve_device(device) if device is not None else data.train.x.device
    return TicketFinder(config, data, Path(store), device=device).find(specs[0])
