"""IMP as a ticket search: one IMP run per seed reaches every requested compression exactly.

The ticket of a compression is its IMP level: the level's mask and rewound start weights, and
as cost the training of every level before it. When the harness would train the ticket exactly
as IMP trained that level (same `TrainConfig`), the level's training is offered for reuse, and
level 0 (the dense network) is offered as the experiment's dense reference.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence

import torch

from pai.core.store import FILES
from pai.pruning.criteria import DEFAULT_CRITERION
from pai.report.schema import IMP
from pai.search.imp import ImpConfig, ImpResult, ImpRun
from pai.search.options import ImpOptions
from pai.search.protocol import (
    SearchContext,
    SearchIdentity,
    SearchRequest,
    SearchStage,
    TicketSearch,
)
from pai.search.ticket import StoredTraining, Ticket


def imp_levels(compressions: Iterable[float], rate: float) -> int:
    """The geometric IMP levels needed to reach the largest compression at `rate`."""
    largest = max(compressions)
    return max(1, math.ceil(math.log(largest) / -math.log1p(-rate) - 1e-9))


class ImpSearch(TicketSearch):
    """Iterative magnitude pruning (Frankle & Carbin 2019) with every compression a target."""

    name = IMP
    description = "iterative magnitude pruning: train, prune 20% of what is left, rewind, repeat"
    needs_data = True
    Options = ImpOptions

    def identity(self, request: SearchRequest) -> SearchIdentity:
        options = request.options or ImpOptions()
        targets = sorted({float(c) for c in (*request.compressions, request.compression)})
        return SearchIdentity(
            {
                "rate": options.rate,
                "rewind": options.rewind,
                "levels": imp_levels(targets, options.rate),
                "targets": targets,
                # None (left out of hashes) for the default: runs from before criteria keep theirs
                "criterion": None if options.criterion == DEFAULT_CRITERION else options.criterion,
            }
        )

    def imp_config(self, request: SearchRequest) -> ImpConfig:
        """The IMP run of `request`'s seed, with every compression a target."""
        identity = self.identity(request).options
        return ImpConfig(
            model=request.model,
            dataset=request.dataset,
            train=request.train,
            model_seed=request.seed,
            levels=identity["levels"],
            rate=identity["rate"],
            scope=request.scope,
            rewind=identity["rewind"],
            targets=tuple(identity["targets"]),
            train_per_class=request.train_per_class,
            criterion=identity["criterion"],
        )

    def imp_run(
        self, request: SearchRequest, context: SearchContext, *, dense: bool = False
    ) -> ImpRun:
        """The IMP run of `request` in the context's store, built once per experiment.

        With `dense` the request is the dense reference's (compression 1), whose level 0 is
        that of the experiment's tickets: the run's targets are the experiment's compressions.
        """
        if dense and request.compressions:
            request = dataclasses.replace(request, compression=request.compressions[0])
        config = self.imp_config(request)
        key = (IMP, config)
        if key not in context.cache:
            context.cache[key] = ImpRun(
                config, context.store / IMP, context.data, context.progress, context.checkpoint
            )
        return context.cache[key]

    def result(
        self, request: SearchRequest, context: SearchContext, *, dense: bool = False
    ) -> ImpResult:
        """The IMP run of `request` up to the level its ticket (with `dense`: level 0) is drawn
        from, the missing levels trained first; later levels are left to later requests."""
        run = self.imp_run(request, context, dense=dense)
        return run.run(until=0 if dense else run.level_for(request.compression))

    def stages(
        self, request: SearchRequest, context: SearchContext, *, dense: bool = False
    ) -> list[SearchStage]:
        """Levels 0 to the ticket's level (with `dense`: level 0, when its training is the
        dense reference's), each after the one before it."""
        run = self.imp_run(request, context, dense=dense)
        if dense and run.level_configs[0] != request.train:
            return []
        last = 0 if dense else run.level_for(request.compression)
        keys = [f"{IMP}/{run.root.name}/{run.level_run(lv).path.name}" for lv in range(last + 1)]
        return [
            SearchStage(keys[lv], lv, run.level_run(lv).path, tuple(keys[lv - 1 : lv]))
            for lv in range(last + 1)
        ]

    def compute_stage(
        self, stage: SearchStage, request: SearchRequest, context: SearchContext
    ) -> bool:
        run = self.imp_run(request, context, dense=stage.index == 0)
        return run.train_level(stage.index)

    def prepare(
        self,
        requests: Sequence[SearchRequest],
        context: SearchContext,
        *,
        stack_size: int | None = None,
    ) -> None:
        """The IMP runs of the requests' seeds trained level by level side by side, each up to
        the level its requests' tickets are drawn from (`pai.search.imp_lockstep`)."""
        from pai.search.imp_lockstep import train_in_lockstep

        lasts: dict[int, tuple[ImpRun, int]] = {}
        for request in requests:
            run = self.imp_run(request, context)
            _, last = lasts.get(id(run), (run, 0))
            lasts[id(run)] = (run, max(last, run.level_for(request.compression)))
        if len(lasts) > 1 and stack_size != 1:
            runs, until = zip(*lasts.values(), strict=True)
            train_in_lockstep(runs, until=until, stack_size=stack_size)

    def find(self, request: SearchRequest, context: SearchContext) -> Ticket:
        result = self.result(request, context)
        level = result.levels[-1]
        rewind = torch.load(result.path / FILES.rewind, map_location="cpu", weights_only=True)
        reusable = level.train_config == request.train
        return Ticket(
            level.masks,
            level.start_state(),
            level.cost,
            source_state=rewind,
            trained=StoredTraining(level.path) if reusable else None,
        )

    def dense_training(
        self, request: SearchRequest, context: SearchContext
    ) -> StoredTraining | None:
        dense = self.result(request, context, dense=True).levels[0]
        return StoredTraining(dense.path) if dense.train_config == request.train else None
