"""How many weights each level of iterative magnitude pruning keeps, and which.

`pruning_plan` fixes every level's kept counts in advance (so the number of weights kept at
each level is known exactly, and exact target compressions can be placed among the geometric
levels); `prune_by_criterion` keeps exactly those counts, ranking only live weights by a mask
criterion (`pai.pruning.criteria`; `prune_by_magnitude` is the default one, their trained
magnitude), so a pruned weight never comes back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pai.core.errors import PaiError
from pai.pruning.criteria import Criterion, LargeFinal
from pai.pruning.masks import SCOPES, Masks, keep_topk, kept_count


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def check_schedule(
    levels: int, rate: float, scope: str, targets: Sequence[float], output_half_rate: bool
) -> None:
    """PaiError naming the first schedule setting that is not allowed."""
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 0:
        raise PaiError(f"levels must be a whole number >= 0, got {levels!r}")
    if not 0 < rate < 1:
        raise PaiError(f"pruning rate must be between 0 and 1 (exclusive), got {rate!r}")
    if scope not in SCOPES:
        from pai.pruning.allocators import resolve_allocator

        resolve_allocator(scope)  # PaiError naming the scopes for an unknown one
        if output_half_rate:
            raise PaiError(
                f"scope {scope!r} sets every layer's count itself; it cannot be combined with "
                "a half-rate output layer"
            )
    for target in targets:
        if not math.isfinite(target) or target < 1:
            raise PaiError(f"target compression must be a finite number >= 1, got {target!r}")
    if targets and output_half_rate:
        raise PaiError(
            "exact target compressions cannot be combined with a half-rate output layer: the "
            "overall compression then depends on the layer sizes; drop one of the two"
        )


# --- the schedule ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PruningPlan:
    """How many weights each group keeps at each level; level 0 is the dense network.

    A group is a tuple of parameter names ranked together: all prunable weights for global
    pruning, one layer each for layerwise pruning, and the output layer on its own when it is
    pruned at half rate.
    """

    sizes: dict[str, int]
    groups: tuple[tuple[str, ...], ...]
    kept: tuple[tuple[int, ...], ...]  # kept[level][group]

    def __len__(self) -> int:
        return len(self.kept)

    @property
    def total(self) -> int:
        return sum(self.sizes.values())

    def level_kept(self, level: int) -> int:
        """Weights kept in total at `level`."""
        return sum(self.kept[level])

    def compression(self, level: int) -> float:
        """The true compression (prunable / kept weights) at `level`."""
        return self.total / self.level_kept(level)


def pruning_plan(
    sizes: Mapping[str, int],
    *,
    levels: int,
    rate: float = 0.2,
    scope: str = "global",
    targets: Sequence[float] = (),
    output_half_rate: bool = False,
    min_kept: int = 1,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> PruningPlan:
    """The kept count of every group at every level, for prunable tensors of the given sizes.

    A group of n weights pruned at rate r keeps floor(n * (1 - r)^L + 1/2) weights at level
    L = 1..`levels` (round half up, computed in float64), at least min(`min_kept`, n). Global
    scope ranks all tensors as one group; layerwise scope ranks each tensor alone. With
    `output_half_rate` (Frankle & Carbin 2019) the output layer, the last tensor of `sizes`,
    is its own group pruned at rate r / 2; the others keep their scope.

    Each target compression c adds a level where every group keeps exactly `kept_count(n, c)`,
    placed by density among the others (density (1 - r)^L against 1 / c), so the step before
    it prunes to the exact target. Given targets, levels below the largest one are dropped; a
    target beyond the last geometric level is reached in one step from it. A level never keeps
    more than the one before (a pruned weight cannot return), and a level keeping what the one
    before kept is dropped, which happens only in tiny networks or at `min_kept`.

    Any other scope is a density allocator (`pai.pruning.allocators`, given the tensors'
    `shapes`): each tensor is its own group, and a level at total compression c (the geometric
    level's N / floor(N (1 - r)^L + 1/2), or a target) keeps the allocator's counts at c, capped
    at the level before.
    """
    names = list(sizes)
    if not names or any(size < 1 for size in sizes.values()):
        raise PaiError(f"a pruning plan needs tensors with at least one weight, got {dict(sizes)}")
    check_schedule(levels, rate, scope, targets, output_half_rate)
    if scope not in SCOPES:
        return _allocated_plan(
            sizes, shapes, levels=levels, rate=rate, scope=scope, targets=targets
        )
    output = names[-1] if output_half_rate else None
    body = [n for n in names if n != output]
    group_rates: list[tuple[tuple[str, ...], float]] = []
    if scope == "global":
        group_rates += [(tuple(body), rate)] if body else []
    else:
        group_rates += [((n,), rate) for n in body]
    if output is not None:
        group_rates.append(((output,), rate / 2))
    groups = tuple(g for g, _ in group_rates)
    group_sizes = [sum(sizes[n] for n in g) for g in groups]

    # (density under the base rate, order at ties, counts per group)
    points: list[tuple[float, int, tuple[int, ...]]] = []
    for level in range(1, levels + 1):
        counts = tuple(
            max(min(min_kept, n), 1, _round_half_up(n * (1 - r) ** level))
            for n, (_, r) in zip(group_sizes, group_rates, strict=True)
        )
        points.append(((1 - rate) ** level, 0, counts))
    for target in sorted(set(targets)):
        counts = tuple(kept_count(n, target) for n in group_sizes)
        points.append((1 / target, 1, counts))
    points.sort(key=lambda point: (-point[0], point[1]))
    if targets:
        points = [p for p in points if p[0] >= 1 / max(targets)]

    kept = [tuple(group_sizes)]
    for _, _, counts in points:
        counts = tuple(min(c, before) for c, before in zip(counts, kept[-1], strict=True))
        if counts != kept[-1]:
            kept.append(counts)
    return PruningPlan(dict(sizes), groups, tuple(kept))


def _allocated_plan(
    sizes: Mapping[str, int],
    shapes: Mapping[str, tuple[int, ...]] | None,
    *,
    levels: int,
    rate: float,
    scope: str,
    targets: Sequence[float],
) -> PruningPlan:
    """`pruning_plan` under a density allocator: one group per tensor, counts from the scope."""
    from pai.pruning.allocators import layer_counts

    if shapes is None or list(shapes) != list(sizes):
        raise PaiError(f"scope {scope!r} needs the shapes of the pruned tensors")
    total = sum(sizes.values())
    points = [
        ((1 - rate) ** level, 0, total / max(1, _round_half_up(total * (1 - rate) ** level)))
        for level in range(1, levels + 1)
    ]
    points += [(1 / target, 1, float(target)) for target in sorted(set(targets))]
    points.sort(key=lambda point: (-point[0], point[1]))
    if targets:
        points = [p for p in points if p[0] >= 1 / max(targets)]
    kept = [tuple(sizes.values())]
    for _, _, compression in points:
        available = dict(zip(sizes, kept[-1], strict=True))
        counts = tuple(layer_counts(scope, dict(shapes), compression, available).values())
        if counts != kept[-1]:
            kept.append(counts)
    return PruningPlan(dict(sizes), tuple((name,) for name in sizes), tuple(kept))


def imp_schedule(
    total: int, levels: int, rate: float = 0.2, targets: Sequence[float] = ()
) -> list[int]:
    """Weights kept after each level 1, 2, ... of global IMP on `total` weights.

    Level L keeps floor(total * (1 - rate)^L + 1/2) (round half up, at least 1); each target
    compression c adds a level keeping exactly `kept_count(total, c)`. The full rule, including
    ordering, dropped repeats and where the schedule stops with targets, is `pruning_plan`'s.
    """
    plan = pruning_plan({"weights": total}, levels=levels, rate=rate, targets=targets)
    return [counts[0] for counts in plan.kept[1:]]


@torch.no_grad()
def prune_by_criterion(
    start: Mapping[str, Tensor],
    trained: Mapping[str, Tensor],
    masks: Masks,
    groups: Sequence[Sequence[str]],
    counts: Sequence[int],
    criterion: Criterion,
    generator: torch.Generator | None = None,
) -> Masks:
    """Keep exactly `counts[i]` weights of `groups[i]`: the live ones `criterion` scores highest.

    `start` and `trained` map every masked name to the weights the training started from and
    ended at. Each group is scored on its own (ranks, for the criteria that use them, are
    within the group). Only weights alive in `masks` are ranked, so a pruned weight never
    comes back; ties break by position (`keep_topk`). `generator` (default: seeded with 0)
    feeds the criteria that draw.
    """
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    kept: dict[str, Tensor] = {}
    for group, count in zip(groups, counts, strict=True):
        live = {name: masks[name] for name in group}
        scores = criterion.scores(
            {n: start[n].detach() for n in group},
            {n: trained[n].detach() for n in group},
            live,
            generator,
        )
        size = sum(score.numel() for score in scores.values())
        # kept_count(size, size / count) == count exactly: the quotient is within float
        # rounding of `count`, far from the half-way points kept_count rounds at.
        kept.update(keep_topk(scores, size / count, "global", live=live))
    return Masks({name: kept[name] for name in masks})


def prune_by_magnitude(
    model: nn.Module, masks: Masks, groups: Sequence[Sequence[str]], counts: Sequence[int]
) -> Masks:
    """Keep exactly `counts[i]` weights of `groups[i]`: the live ones of largest magnitude.

    `prune_by_criterion` with `large_final`. The model is not changed.
    """
    params = dict(model.named_parameters())
    return prune_by_criterion(params, params, masks, groups, counts, LargeFinal())
