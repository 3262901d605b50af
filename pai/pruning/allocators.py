"""Density allocators: how many of the kept weights each layer gets.

Since 2020 the field's central finding is that much of a pruning-at-initialization method's
gain lies in its layerwise densities: random pruning with a good per-layer allocation matches
SNIP, GraSP and SynFlow at moderate sparsity (Su et al. 2020; Frankle et al. 2021; Liu et al.
2022). The allocator is therefore a third axis beside the scorer and the compression: it splits
the kept count among the layers, and the scorer then ranks within each layer. `global` is the
one allocator that ranks all layers jointly (the scores decide the densities).

An allocator is a plugin of the `pai.allocators` entry-point group, found exactly as scorers
are (`PluginRegistry`); pai declares its built-ins there. A scope names an allocator: `erk`,
or, for one that takes an argument, `from-masks:FILE`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

from torch import Tensor

from pai.core.errors import PaiError, unknown_name
from pai.core.plugins import ALLOCATORS, PluginEntry, PluginRegistry
from pai.pruning.choices import SEPARATOR
from pai.pruning.masks import (
    Masks,
    as_masks,
    keep_counts,
    keep_topk,
    kept_count,
    layerwise_counts,
)

ENTRY_POINT_GROUP = ALLOCATORS

Shapes = Mapping[str, tuple[int, ...]]


class Allocator:
    """The allocator protocol, and a base class with the shared proportional rule.

    An allocator declares `name`, a one-line `description` (with its paper), `joint` (True only
    for `global`, which ranks all layers together and has no per-layer counts) and `parameter`
    (the argument's placeholder, e.g. "FILE", for an allocator written `name:ARGUMENT`, else
    None). `layer_counts(shapes, compression, available)` returns the weights each layer keeps:
    exact counts summing to `kept_count(total, compression)`, none above the layer's available
    (live) weights. `identity` is what a run's configuration records.
    """

    name: str = ""
    description: str = ""
    joint: bool = False
    parameter: str | None = None

    def layer_counts(
        self, shapes: Shapes, compression: float, available: Mapping[str, int] | None = None
    ) -> dict[str, int]:
        raise NotImplementedError(f"{type(self).__name__} does not implement layer_counts()")

    def with_argument(self, argument: str) -> Allocator:
        """The allocator for `name:argument`; only allocators with a `parameter` take one."""
        raise PaiError(f"scope {self.name!r} takes no argument; write it as {self.name!r}")

    @property
    def identity(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<allocator {self.identity!r}>"

    @staticmethod
    def proportional(
        weights: Mapping[str, int | Fraction],
        shapes: Shapes,
        compression: float,
        available: Mapping[str, int] | None = None,
        fixed: Mapping[str, int] | None = None,
    ) -> dict[str, int]:
        """Counts proportional to `weights`, capped at each layer's available weights.

        The target K = kept_count(total, compression) is split so that layer l keeps
        clip(lambda * weights[l], 1, available[l]) (one common lambda, exact rationals), the
        rule of RigL (Evci et al. 2020) for layers whose density would exceed 1: they keep all
        their weights and the others share the rest. Every layer keeps at least one weight, as
        `layerwise` does. The quotas are then rounded to whole counts summing exactly to K by
        largest remainder (ties: the earlier layer). `fixed` layers keep the given count,
        clamped so that the others can still keep between 1 and all of their weights.
        """
        sizes = {name: math.prod(shape) for name, shape in shapes.items()}
        upper = dict(sizes) if available is None else {n: int(available[n]) for n in shapes}
        lower = {name: min(1, upper[name]) for name in shapes}
        total, target = sum(sizes.values()), kept_count(sum(sizes.values()), compression)
        if target > sum(upper.values()):
            raise PaiError(
                f"compression {compression:g} keeps {target} weights, more than the "
                f"{sum(upper.values())} still alive; pruning never revives weights"
            )
        if target < sum(lower.values()):
            largest = total / sum(lower.values())
            raise PaiError(
                f"compression {compression:g} keeps {target} weights, fewer than one per layer "
                f"({sum(lower.values())}); allowed: 1 to {largest:.6g}"
            )
        counts: dict[str, int] = {}
        for name, count in (fixed or {}).items():
            rest = [n for n in shapes if n != name and n not in counts]
            low = target - sum(counts.values()) - sum(upper[n] for n in rest)
            high = target - sum(counts.values()) - sum(lower[n] for n in rest)
            counts[name] = max(low, lower[name], min(count, high, upper[name]))
        free = [name for name in shapes if name not in counts]
        quotas = _water_fill(
            {n: Fraction(weights[n]) for n in free},
            {n: lower[n] for n in free},
            {n: upper[n] for n in free},
            target - sum(counts.values()),
        )
        counts.update(_largest_remainder(quotas))
        return {name: counts[name] for name in shapes}


def _water_fill(
    weights: dict[str, Fraction], lower: dict[str, int], upper: dict[str, int], kept: int
) -> dict[str, Fraction]:
    """Quotas clip(lambda * weights[n], lower[n], upper[n]) summing exactly to `kept`.

    The sum is a nondecreasing piecewise-linear function of lambda whose breakpoints are
    lower/weight and upper/weight; lambda lies on the first segment whose end reaches `kept`.
    """

    def quotas(scale: Fraction) -> dict[str, Fraction]:
        return {
            n: min(max(scale * w, Fraction(lower[n])), Fraction(upper[n]))
            for n, w in weights.items()
        }

    points = sorted(
        {Fraction(0)}
        | {Fraction(bound[n]) / w for n, w in weights.items() if w > 0 for bound in (lower, upper)}
    )
    previous = points[0]
    for point in points:
        reached = sum(quotas(point).values())
        if reached >= kept:
            before = sum(quotas(previous).values())
            if reached == before:
                return quotas(point)
            return quotas(previous + (kept - before) * (point - previous) / (reached - before))
        previous = point
    raise PaiError(f"cannot split {kept} weights in proportion to {weights}: they are all zero")


def _largest_remainder(quotas: dict[str, Fraction]) -> dict[str, int]:
    """Whole counts with the quotas' (whole) sum: floors, plus one for the largest remainders."""
    counts = {name: math.floor(q) for name, q in quotas.items()}
    left = int(sum(quotas.values())) - sum(counts.values())
    order = sorted(quotas, key=lambda n: -(quotas[n] - counts[n]))  # stable: earlier layer first
    for name in order[:left]:
        counts[name] += 1
    return counts


def _layer_fans(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(fan in, fan out, kernel size) of a Linear (out, in) or Conv (out, in, *kernel) weight."""
    if len(shape) < 2:
        raise PaiError(f"a layer of shape {shape} is neither Linear nor Conv; allowed: 2+ dims")
    return shape[1], shape[0], math.prod(shape[2:])


class GlobalAllocator(Allocator):
    """Rank all layers jointly: the densities are whatever the scores make them."""

    name = "global"
    description = "rank all layers together; the scores decide each layer's density"
    joint = True

    def layer_counts(
        self, shapes: Shapes, compression: float, available: Mapping[str, int] | None = None
    ) -> dict[str, int]:
        raise PaiError("scope 'global' ranks all layers jointly; its counts come from the scores")


class LayerwiseAllocator(Allocator):
    """The same density in every layer: each keeps `kept_count(layer size, compression)`.

    The one built-in whose counts need not sum to kept_count(total, compression): each layer's
    count is rounded on its own, as pai has always done (run hashes depend on it).
    """

    name = "layerwise"
    description = "uniform: every layer keeps the same fraction"

    def layer_counts(
        self, shapes: Shapes, compression: float, available: Mapping[str, int] | None = None
    ) -> dict[str, int]:
        counts = layerwise_counts({n: math.prod(s) for n, s in shapes.items()}, compression)
        if available is None:
            return counts
        return {name: min(count, int(available[name])) for name, count in counts.items()}


class ErdosRenyiAllocator(Allocator):
    """Erdos-Renyi (Mocanu et al. 2018; Evci et al. 2020): density proportional to
    (n_in + n_out) / (n_in * n_out), n_in and n_out the input and output channels or units."""

    name = "er"
    description = "Erdos-Renyi: density ~ (n_in + n_out) / (n_in n_out) (Mocanu et al. 2018)"

    def layer_counts(
        self, shapes: Shapes, compression: float, available: Mapping[str, int] | None = None
    ) -> dict[str, int]:
        weights = {}
        for name, shape in shapes.items():
            fan_in, fan_out, kernel = _layer_fans(shape)
            weights[name] = kernel * (fan_in + fan_out)  # size * density, up to one factor
        return self.proportional(weights, shapes, compression, available)


class ErkAllocator(Allocator):
    """Erdos-Renyi-Kernel (RigL, Evci et al. 2020): density proportional to the sum of the
    weight's dimensions over their product, (c_in + c_out + k_h + k_w) / (c_in c_out k_h k_w)
    for a convolution, (n_in + n_out) / (n_in n_out) for a linear layer."""

    name = "erk"
    description = (
        "ERK: density ~ (c_in + c_out + k_h + k_w) / (c_in c_out k_h k_w) (Evci et al. 2020)"
    )

    def layer_counts(
        self, shapes: Shapes, compression: float, available: Mapping[str, int] | None = None
    ) -> dict[str, int]:
        weights = {
            name: sum(_layer_fans(shape)[:2]) + sum(shape[2:]) for name, shape in shapes.items()
        }
        return self.proportional(weights, shapes, compression, available)


class SmartRatioAllocator(Allocator):
    """Smart ratio (Su et al. 2020, Sec. 5): the random tickets' layerwise keep-ratios.

    With L prunable layers in model order, layer l < L keeps a ratio proportional to
    (L - l + 1)^2 + (L - l + 1), decreasing with depth; the last layer (the classifier) keeps a
    fixed `last_ratio` of 30%, as in the paper. The last layer's count is rounded half up and
    lowered when the target leaves too few weights for one per other layer.
    """

    name = "smart-ratio"
    description = "keep-ratio ~ (L-l+1)^2 + (L-l+1), last layer 30% (Su et al. 2020)"
    last_ratio = Fraction(3, 10)

    def layer_counts(
        self, shapes: Shapes, compression: float, available: Mapping[str, int] | None = None
    ) -> dict[str, int]:
        names = list(shapes)
        depth = len(names)
        weights = {
            name: math.prod(shapes[name]) * ((depth - index) ** 2 + (depth - index))
            for index, name in enumerate(names)
        }
        last = names[-1]
        fixed = {last: math.floor(self.last_ratio * math.prod(shapes[last]) + Fraction(1, 2))}
        return self.proportional(weights, shapes, compression, available, fixed)


class FromMasksAllocator(Allocator):
    """The layerwise densities of a saved mask file, at any compression.

    Layer l's count is proportional to the kept count of l in the file (clipped and rounded as
    `proportional` does), so at the file's own compression the counts are the file's exactly.
    This generalizes IMP's control "random with IMP's layerwise densities" to any method's
    masks: `random` with `from-masks:FILE` keeps the file's densities at random positions. (A
    layer the file leaves empty keeps one weight: no allocator empties a layer.)
    """

    name = "from-masks"
    description = "the layerwise densities of a saved mask file (from-masks:FILE)"
    parameter = "FILE"

    def __init__(self, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        self.kept: dict[str, int] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        if self.path is not None:
            masks = Masks.load(self.path)
            self.kept = masks.layer_kept()
            self.shapes = {name: tuple(mask.shape) for name, mask in masks.items()}

    def with_argument(self, argument: str) -> Allocator:
        if not argument:
            raise PaiError("scope 'from-masks' needs a mask file: write from-masks:FILE")
        return FromMasksAllocator(argument)

    @property
    def identity(self) -> str:
        """`from-masks:` and a digest of the file's layer names, shapes and kept counts."""
        if self.path is None:
            return self.name
        layers = ";".join(f"{n}{list(s)}={self.kept[n]}" for n, s in sorted(self.shapes.items()))
        return f"{self.name}:{hashlib.sha256(layers.encode()).hexdigest()[:16]}"

    def layer_counts(
        self, shapes: Shapes, compression: float, available: Mapping[str, int] | None = None
    ) -> dict[str, int]:
        if self.path is None:
            raise PaiError("scope 'from-masks' needs a mask file: write from-masks:FILE")
        if {n: tuple(s) for n, s in shapes.items()} != self.shapes:
            raise PaiError(
                f"mask file {str(self.path)!r} has layers {sorted(self.shapes)} of shapes "
                f"{[self.shapes[n] for n in sorted(self.shapes)]}, which do not match the "
                f"pruned layers {sorted(shapes)}"
            )
        return self.proportional(self.kept, shapes, compression, available)


def _check_protocol(allocator: Any) -> Allocator:
    """`allocator` itself if it keeps the allocator protocol, else PaiError."""
    for attribute, kind in {"name": str, "description": str, "joint": bool}.items():
        if not isinstance(getattr(allocator, attribute, None), kind):
            raise PaiError(
                f"{allocator!r} is not an allocator: {attribute!r} must be a {kind.__name__}"
            )
    if not isinstance(getattr(allocator, "parameter", None), (str, type(None))):
        raise PaiError(f"{allocator!r} is not an allocator: 'parameter' must be a str or None")
    if not allocator.name or SEPARATOR in allocator.name:
        raise PaiError(f"{allocator!r} is not an allocator: its name must be non-empty, no ':'")
    if not callable(getattr(allocator, "layer_counts", None)):
        raise PaiError(f"{allocator!r} is not an allocator: it has no layer_counts() method")
    return allocator


_ALLOCATORS: PluginRegistry[Allocator] = PluginRegistry(
    ENTRY_POINT_GROUP, "allocator", _check_protocol
)


def allocator_entries() -> list[PluginEntry[Allocator]]:
    """Every discovered allocator, broken ones included, sorted by name."""
    return _ALLOCATORS.entries()


def available_scopes() -> list[str]:
    """Every scope that can be written: allocator names, `name:FILE` for those with an argument."""
    scopes = []
    for entry in _ALLOCATORS.entries():
        if entry.plugin is not None:
            parameter = getattr(entry.plugin, "parameter", None)
            scopes.append(f"{entry.name}{SEPARATOR}{parameter}" if parameter else entry.name)
    return scopes


def register_allocator(allocator: Any) -> Any:
    """Register an allocator class or instance in this process; returns its argument."""
    _ALLOCATORS.register(allocator)
    return allocator


def unregister_allocator(name: str) -> None:
    """Remove an in-process registration."""
    _ALLOCATORS.unregister(name)


def rescan_allocators() -> None:
    """Forget the cached entry-point scan, so newly installed allocators are found."""
    _ALLOCATORS.rescan()


def resolve_allocator(scope: str | Allocator) -> Allocator:
    """The allocator a scope names (`erk`, `from-masks:FILE`), or an allocator object checked.

    PaiError for an unknown name, an argument given to an allocator that takes none, or one
    missing where it is needed.
    """
    if not isinstance(scope, str):
        return _check_protocol(scope)
    name, separator, argument = scope.partition(SEPARATOR)
    if name not in {entry.name for entry in _ALLOCATORS.entries()}:
        raise unknown_name("scope", scope, available_scopes())
    allocator = _ALLOCATORS.get(name)
    if separator:
        return _check_protocol(allocator.with_argument(argument))
    if getattr(allocator, "parameter", None):
        raise PaiError(
            f"scope {name!r} needs an argument: write {name}{SEPARATOR}{allocator.parameter}"
        )
    return allocator


def layer_counts(
    scope: str | Allocator,
    shapes: Shapes,
    compression: float,
    available: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """The kept count of every layer under `scope`, checked: whole, from 0 to what is available.

    PaiError for `global`, whose counts come from the scores.
    """
    allocator = resolve_allocator(scope)
    counts = allocator.layer_counts(shapes, compression, available)
    if list(counts) != list(shapes):
        raise PaiError(
            f"allocator {allocator.name!r} gave counts for {list(counts)}, expected {list(shapes)}"
        )
    for name, count in counts.items():
        limit = math.prod(shapes[name]) if available is None else int(available[name])
        if not isinstance(count, int) or not 0 <= count <= limit:
            raise PaiError(
                f"allocator {allocator.name!r} gave {name!r} {count!r} weights; allowed: whole "
                f"numbers from 0 to {limit}"
            )
    return counts


def keep_allocated(
    scores: Mapping[str, Tensor],
    compression: float,
    scope: str | Allocator = "global",
    live: Mapping[str, Tensor] | None = None,
) -> Masks:
    """`keep_topk` for every scope: the allocator sets each layer's count, the scores rank.

    `global` ranks all layers jointly (`keep_topk`); any other allocator gives every layer its
    count out of the weights alive in `live`, and each layer keeps its best live weights (ties:
    the lower index). A pruned weight never comes back.
    """
    allocator = resolve_allocator(scope)
    if allocator.joint:
        return keep_topk(scores, compression, "global", live)
    shapes = {name: tuple(score.shape) for name, score in scores.items()}
    live = None if live is None else as_masks(live, "live masks")
    kept = None if live is None else live.layer_kept()  # counted once, reused by keep_counts
    available = None if kept is None else {name: kept[name] for name in scores}
    return keep_counts(scores, layer_counts(allocator, shapes, compression, available), live)
