"""The ticket-search protocol: every method, from random pruning to IMP, finds a `Ticket`.

A `TicketSearch` is told what to find by a `SearchRequest` (model, dataset, compression, seed,
training budget, scope, the method's own options) and given a `SearchContext` (the loaded data,
the device, a run store for searches that keep runs, a per-experiment cache). It returns a
`Ticket`. Experiments never ask what kind of method they hold: a search declares what decides
its ticket (`identity`), whether an inverted variant exists (`inverted`), and its options as a
dataclass (`Options`), from whose fields the command line grows `--<method>-<option>` flags.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from pai.core import seeds
from pai.core.errors import PaiError
from pai.search.ticket import StoredTraining, Ticket
from pai.training.checkpoint import DEFAULT_POLICY, CheckpointPolicy

if TYPE_CHECKING:
    from pai.data.loading import Dataset
    from pai.training.config import TrainConfig


@dataclass(frozen=True)
class SearchRequest:
    """One ticket to find.

    `compressions` are every compression the experiment asks this method for (IMP reaches them
    all exactly in one run); `options` is an instance of the search's `Options` (None when it
    has none). `per_class` is the size per class of the scoring batch of data-driven scorers;
    `train_per_class` cuts the training split (None: all of it).
    """

    model: str
    dataset: str
    compression: float
    seed: int
    train: TrainConfig
    scope: str = "global"
    per_class: int = 10
    train_per_class: int | None = None
    compressions: tuple[float, ...] = ()
    options: Any = None


@dataclass
class SearchContext:
    """What a search may use: the data on `device`, a store for its own runs, and a cache.

    `cache` lives as long as one experiment, so a search can share work between the requests
    of that experiment (scoring batches per seed, one IMP run for all its targets).
    `checkpoint` is how the runs a search stores checkpoint as they train.
    """

    data: Dataset
    device: torch.device
    store: Path
    progress: bool | None = None
    cache: dict[Any, Any] = field(default_factory=dict)
    checkpoint: CheckpointPolicy | None = DEFAULT_POLICY

    def build(self, request: SearchRequest) -> nn.Module:
        """The zoo model of `request`, initialized from its seed (on the CPU)."""
        from pai.models import build_model

        return build_model(request.model, request.dataset, seed=seeds.model_init(request.seed))

    def scoring_batches(self, request: SearchRequest) -> list[tuple[Tensor, Tensor]]:
        """The seeded class-balanced scoring batch of `request`'s seed, drawn once."""
        from pai.data.loading import scoring_batches

        key = ("scoring batches", request.seed, request.per_class)
        if key not in self.cache:
            self.cache[key] = scoring_batches(
                self.data.train, request.per_class, seeds.scoring_subset(request.seed)
            )
        return self.cache[key]


@dataclass(frozen=True)
class SearchStage:
    """A stored run a search computes on its way to a ticket (IMP: one level), which a sweep
    may schedule as a task of its own ahead of the ticket.

    `key` names it uniquely in a store (requests sharing the run share the key), `after` lists
    the keys of the stages it needs first, `index` is its place in the search's own chain and
    `path` its run directory: the stage is done when that run is complete.
    """

    key: str
    index: int
    path: Path
    after: tuple[str, ...] = ()


@dataclass(frozen=True)
class SearchIdentity:
    """What besides the request's common fields decides a search's ticket (part of run hashes).

    `per_class` is set only for searches that score on the class-balanced batch.
    """

    options: dict[str, Any]
    per_class: int | None = None


class TicketSearch:
    """Base of every search. Subclasses set `name`, `description`, `needs_data`, and implement
    `identity` and `find`; `Options` (a dataclass) declares their options, if any."""

    name: str = ""
    description: str = ""
    needs_data: bool = False
    Options: type | None = None

    def options_for(self, given: Mapping[str, Any] | None = None) -> Any:
        """The search's options from `given` (field name -> value), the rest defaulted."""
        given = dict(given or {})
        if self.Options is None:
            if given:
                raise PaiError(
                    f"method {self.name!r} takes no options; got {', '.join(sorted(given))}"
                )
            return None
        allowed = [f.name for f in dataclasses.fields(self.Options)]
        unknown = sorted(set(given) - set(allowed))
        if unknown:
            raise PaiError(
                f"method {self.name!r} has no option {unknown[0]!r}; "
                f"allowed: {', '.join(allowed) or 'none'}"
            )
        return self.Options(**given)

    def identity(self, request: SearchRequest) -> SearchIdentity:
        """What besides the request's common fields decides this search's ticket."""
        options = {} if request.options is None else dataclasses.asdict(request.options)
        return SearchIdentity(options)

    def find(self, request: SearchRequest, context: SearchContext) -> Ticket:
        raise NotImplementedError(f"{type(self).__name__} does not implement find()")

    def inverted(self) -> TicketSearch | None:
        """The search keeping what this one would prune (the `invert` sanity check), if any.

        None for searches whose mask comes from training: keeping their smallest trained
        weights is a different search, not an inversion of a score.
        """
        return None

    def dense_training(
        self, request: SearchRequest, context: SearchContext
    ) -> StoredTraining | None:
        """A finished dense training under `request.train` this search made anyway, if any."""
        return None

    def stages(
        self, request: SearchRequest, context: SearchContext, *, dense: bool = False
    ) -> list[SearchStage]:
        """The stored runs `find(request)` (with `dense`: `dense_training`) reads, with every
        stage they need, in an order that puts each after its `after`; the last is read
        directly. A sweep computes them first, each by `compute_stage`; `find` computes what
        is missing itself. Default: none (the search stores nothing).
        """
        return []

    def compute_stage(
        self, stage: SearchStage, request: SearchRequest, context: SearchContext
    ) -> bool:
        """Compute `stage` of `stages(request, ...)` unless it is complete (the stages in its
        `after` are); whether it was computed now."""
        raise PaiError(f"{self.name!r} has no stages; got {stage.key!r}")

    def prepare(
        self,
        requests: Sequence[SearchRequest],
        context: SearchContext,
        *,
        stack_size: int | None = None,
    ) -> None:
        """Compute, side by side, the stages several requests' tickets share before they are
        found one by one (IMP trains the levels of every seed in lockstep, in stacks of up to
        `stack_size` runs; None: the device's default). Default: nothing to share."""

    def __repr__(self) -> str:
        return f"<ticket search {self.name!r}>"
