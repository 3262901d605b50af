"""Mask criteria: which live weights an IMP level keeps, from their start and trained values.

Zhou, Lan, Liu & Yosinski (2019, "Deconstructing lottery tickets: zeros, signs, and the
supermask", Fig. 2) compare nine criteria. Each scores every live weight of a group (the
weights ranked together: the whole network under global pruning, one layer under layerwise
pruning) from its start value w_i and its trained value w_f; the level keeps the highest.

- `large_final`: |w_f| (Frankle & Carbin 2019; IMP's default)
- `small_final`: -|w_f|
- `large_init`: |w_i|
- `small_init`: -|w_i|
- `large_init_large_final`: min(q(|w_i|), q(|w_f|))
- `small_init_small_final`: -max(q(|w_i|), q(|w_f|))
- `magnitude_increase`: |w_f| - |w_i|
- `movement`: |w_f - w_i|
- `random`: u ~ U[0, 1), drawn from the seeded generator

q(v) is the rank of v among the group's live weights (0 for the smallest; equal values ranked
by position). Keeping the top k of min(q_i, q_f) keeps the weights above one common percentile
of both |w_i| and |w_f|: the quadrant of Zhou et al.'s figure, whose code finds that percentile
by bisection; ranks give the exact count instead.

A criterion is a plugin of the `pai.criteria` entry-point group, found as scorers are
(`PluginRegistry`); pai declares these nine there. This module imports torch only where a
criterion computes, so `pai imp --help` lists the criteria without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pai.core.errors import PaiError
from pai.core.plugins import CRITERIA, PluginEntry, PluginRegistry

if TYPE_CHECKING:
    import torch
    from torch import Tensor

ENTRY_POINT_GROUP = CRITERIA
DEFAULT_CRITERION = "large_final"

Tensors = Mapping[str, "Tensor"]


class Criterion:
    """The criterion protocol, and a base class for criteria computed weight by weight.

    A criterion declares `name` and a one-line `description`. `scores(start, trained, live,
    generator)` returns one float64 tensor per name of `trained`, of its shape: higher means
    more worth keeping; only live weights (True in `live`) are ranked, so the others may score
    anything. `start` holds the weights the training started from, `trained` where it ended;
    every random draw comes from `generator` (CPU). Subclasses of this base implement
    `value(start, trained)` for one tensor instead.
    """

    name: str = ""
    description: str = ""

    def scores(
        self, start: Tensors, trained: Tensors, live: Tensors, generator: torch.Generator
    ) -> dict[str, Tensor]:
        return {
            name: self.value(start[name].double(), weight.double())
            for name, weight in trained.items()
        }

    def value(self, start: Tensor, trained: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} implements neither scores() nor value()")

    def __repr__(self) -> str:
        return f"<criterion {self.name!r}>"


class LargeFinal(Criterion):
    name = "large_final"
    description = "|w_f|: the largest trained weights (Frankle & Carbin 2019)"

    def value(self, start: Tensor, trained: Tensor) -> Tensor:
        return trained.abs()


class SmallFinal(Criterion):
    name = "small_final"
    description = "-|w_f|: the smallest trained weights"

    def value(self, start: Tensor, trained: Tensor) -> Tensor:
        return -trained.abs()


class LargeInit(Criterion):
    name = "large_init"
    description = "|w_i|: the largest start weights"

    def value(self, start: Tensor, trained: Tensor) -> Tensor:
        return start.abs()


class SmallInit(Criterion):
    name = "small_init"
    description = "-|w_i|: the smallest start weights"

    def value(self, start: Tensor, trained: Tensor) -> Tensor:
        return -start.abs()


class MagnitudeIncrease(Criterion):
    name = "magnitude_increase"
    description = "|w_f| - |w_i|: the weights whose magnitude grew most"

    def value(self, start: Tensor, trained: Tensor) -> Tensor:
        return trained.abs() - start.abs()


class Movement(Criterion):
    name = "movement"
    description = "|w_f - w_i|: the weights that moved most"

    def value(self, start: Tensor, trained: Tensor) -> Tensor:
        return (trained - start).abs()


def live_ranks(values: Tensors, live: Tensors) -> dict[str, Tensor]:
    """The rank of every live value among all live values of the group (0: the smallest).

    Equal values are ranked by position (the earlier tensor, then the lower flat index, lower);
    dead entries get -1.
    """
    import torch

    names = list(values)
    flat = torch.cat([values[n].reshape(-1).double() for n in names])
    alive = torch.cat([live[n].reshape(-1).to(flat.device) for n in names])
    index = alive.nonzero().squeeze(1)
    order = torch.sort(flat[index], stable=True).indices
    ranks = torch.full_like(flat, -1.0)
    ranks[index[order]] = torch.arange(len(index), dtype=flat.dtype, device=flat.device)
    out, offset = {}, 0
    for n in names:
        size = values[n].numel()
        out[n] = ranks[offset : offset + size].reshape(values[n].shape)
        offset += size
    return out


class LargeInitLargeFinal(Criterion):
    name = "large_init_large_final"
    description = "min of the ranks of |w_i| and |w_f|: large at the start and at the end"

    def scores(
        self, start: Tensors, trained: Tensors, live: Tensors, generator: torch.Generator
    ) -> dict[str, Tensor]:
        import torch

        initial = live_ranks({n: start[n].abs() for n in trained}, live)
        final = live_ranks({n: w.abs() for n, w in trained.items()}, live)
        return {n: torch.minimum(initial[n], final[n]) for n in trained}


class SmallInitSmallFinal(Criterion):
    name = "small_init_small_final"
    description = "-max of the ranks of |w_i| and |w_f|: small at the start and at the end"

    def scores(
        self, start: Tensors, trained: Tensors, live: Tensors, generator: torch.Generator
    ) -> dict[str, Tensor]:
        import torch

        initial = live_ranks({n: start[n].abs() for n in trained}, live)
        final = live_ranks({n: w.abs() for n, w in trained.items()}, live)
        return {n: -torch.maximum(initial[n], final[n]) for n in trained}


class RandomCriterion(Criterion):
    name = "random"
    description = "uniform random scores: a random mask of the same counts"

    def scores(
        self, start: Tensors, trained: Tensors, live: Tensors, generator: torch.Generator
    ) -> dict[str, Tensor]:
        import torch

        return {
            n: torch.rand(w.shape, generator=generator, dtype=torch.float64).to(w.device)
            for n, w in trained.items()
        }


def _check_protocol(criterion: Any) -> Criterion:
    """`criterion` itself if it has a non-empty `name`, a `description` and `scores()`."""
    for attribute in ("name", "description"):
        if not isinstance(getattr(criterion, attribute, None), str):
            raise PaiError(f"{criterion!r} is not a criterion: {attribute!r} must be a str")
    if not criterion.name:
        raise PaiError(f"{criterion!r} is not a criterion: its name is empty")
    if not callable(getattr(criterion, "scores", None)):
        raise PaiError(f"{criterion!r} is not a criterion: it has no scores() method")
    return criterion


_CRITERIA: PluginRegistry[Criterion] = PluginRegistry(
    ENTRY_POINT_GROUP, "criterion", _check_protocol
)


def criterion_entries() -> list[PluginEntry[Criterion]]:
    """Every discovered criterion, broken ones included, sorted by name."""
    return _CRITERIA.entries()


def available_criteria() -> list[str]:
    """Names of the criteria that loaded, sorted."""
    return _CRITERIA.available()


def get_criterion(name: str) -> Criterion:
    """The registered criterion called `name`; PaiError listing the registered ones otherwise."""
    return _CRITERIA.get(name)


def register_criterion(criterion: Any) -> Any:
    """Register a criterion class or instance in this process; returns its argument."""
    _CRITERIA.register(criterion)
    return criterion


def unregister_criterion(name: str) -> None:
    """Remove an in-process registration (installed plugins are removed by uninstalling)."""
    _CRITERIA.unregister(name)


def rescan_criteria() -> None:
    """Forget the cached entry-point scan, so newly installed criteria are found."""
    _CRITERIA.rescan()
