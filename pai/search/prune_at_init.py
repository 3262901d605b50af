"""Any registered scorer as a ticket search: prune the seeded model at initialization.

The ticket is the scorer's mask at the requested compression (its default rounds, the
exponential schedule) and the initial weights under it; its cost is the scoring passes. Scorers
that need data all score the same seeded class-balanced batch of a seed (`per_class` examples
of every class), so every scorer of a seed sees the same examples.
"""

from __future__ import annotations

from pai.pruning.registry import Scorer
from pai.pruning.sanity import inverted
from pai.search.protocol import SearchContext, SearchIdentity, SearchRequest, TicketSearch
from pai.search.ticket import SearchCost, Ticket


class PruneAtInit(TicketSearch):
    """The search of a scorer that prunes at initialization (random, magnitude, SNIP, ...)."""

    def __init__(self, scorer: Scorer):
        self.scorer = scorer
        self.name = scorer.name
        self.description = scorer.description
        self.needs_data = scorer.needs_data

    def identity(self, request: SearchRequest) -> SearchIdentity:
        return SearchIdentity(
            {"rounds": self.scorer.default_rounds},
            per_class=request.per_class if self.needs_data else None,
        )

    def find(self, request: SearchRequest, context: SearchContext) -> Ticket:
        from pai.pruning.driver import prune
        from pai.training.loop import state_copy

        model = context.build(request)
        rounds = self.scorer.default_rounds
        masks = prune(
            model,
            self.scorer,
            request.compression,
            data=context.scoring_batches(request) if self.needs_data else None,
            rounds=rounds,
            scope=request.scope,
            seed=request.seed,
            device=context.device,
        ).to("cpu")
        source = state_copy(model)
        masks.apply(model)
        return Ticket(masks, state_copy(model), SearchCost(scoring_passes=rounds), source)

    def inverted(self) -> TicketSearch:
        return InvertedPruneAtInit(self.scorer)


class InvertedPruneAtInit(PruneAtInit):
    """The scorer's lowest-scored weights kept: the `invert` sanity check of Frankle et al."""

    def __init__(self, scorer: Scorer):
        super().__init__(inverted(scorer))
        self.name = scorer.name
        # The inverted ticket is a variant of the original run: same identity.
        self._original = PruneAtInit(scorer)

    def identity(self, request: SearchRequest) -> SearchIdentity:
        return self._original.identity(request)

    def inverted(self) -> TicketSearch:
        return self._original
