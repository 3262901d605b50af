"""Pruning masks: which weights are kept, and the keep-top-k rule every method shares.

A mask maps a parameter name (as in `model.named_parameters()`) to a bool tensor of that
parameter's shape; True means kept. Compression = prunable weights / kept weights (10 means 90%
pruned) and density = 1 / compression, as in Blalock et al. (2020).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from pai.core.atomic import atomic_torch_save
from pai.core.errors import PaiError
from pai.pruning.choices import SCOPES

Scope = Literal["global", "layerwise"]


def prunable_parameters(model: nn.Module, exclude: tuple[str, ...] = ()) -> dict[str, nn.Parameter]:
    """The weight of every Conv and Linear layer, classifier included, by parameter name.

    Biases and normalization parameters are never prunable. `exclude` names layers (module
    names, e.g. ``"fc3"``) to leave dense.
    """
    found: dict[str, nn.Parameter] = {}
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) and module_name not in exclude:
            found[f"{module_name}.weight" if module_name else "weight"] = module.weight
    unknown = set(exclude) - {name for name, _ in model.named_modules()}
    if unknown:
        raise PaiError(
            f"cannot exclude unknown layer(s) {sorted(unknown)}; the model has no such module"
        )
    return found


def kept_count(total: int, compression: float) -> int:
    """How many of `total` weights a compression keeps: floor(total / compression + 1/2), >= 1."""
    if not math.isfinite(compression) or compression < 1:
        raise PaiError(f"compression must be a finite number >= 1, got {compression!r}")
    if compression > total:
        raise PaiError(
            f"compression {compression:g} is above the number of prunable weights ({total}); "
            f"allowed: 1 to {total}"
        )
    return max(1, math.floor(total / compression + 0.5))


def _version(tensor: Tensor) -> int | None:
    """The tensor's in-place version counter (None for an inference tensor, which has none).

    Every in-place write through the tensor or a view of it increments the counter.
    """
    return None if tensor.is_inference() else tensor._version


class Masks(Mapping[str, Tensor]):
    """An immutable mapping from parameter name to a bool keep-mask of the parameter's shape.

    Kept counts are counted once per layer and remembered with the mask tensor's version
    counter, so a mask changed in place anyway (through the tensor or a view of it) is counted
    again rather than reported stale.
    """

    def __init__(self, masks: Mapping[str, Tensor]):
        for name, mask in masks.items():
            if mask.dtype != torch.bool:
                raise PaiError(f"mask {name!r} has dtype {mask.dtype}; masks must be torch.bool")
        self._masks = dict(masks)
        self._counts: dict[str, tuple[int, int]] = {}  # name -> (version counted at, kept)

    def _remember(self, kept: Mapping[str, int]) -> Masks:
        """Record kept counts known without counting (the masks were just made with them)."""
        for name, count in kept.items():
            version = _version(self._masks[name])
            if version is not None:
                self._counts[name] = (version, count)
        return self

    @classmethod
    def dense(cls, model: nn.Module, exclude: tuple[str, ...] = ()) -> Masks:
        """Every prunable weight kept."""
        params = prunable_parameters(model, exclude)
        masks = {name: torch.ones_like(p, dtype=torch.bool) for name, p in params.items()}
        return cls(masks)._remember({name: p.numel() for name, p in params.items()})

    def __getitem__(self, name: str) -> Tensor:
        return self._masks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    def __repr__(self) -> str:
        return f"Masks({len(self)} layers, kept {self.kept}/{self.total}, compression {self.compression:.4g})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping) or set(self) != set(other):
            return False
        return all(torch.equal(self[n].cpu(), other[n].cpu()) for n in self)

    __hash__ = None  # type: ignore[assignment]

    @property
    def total(self) -> int:
        """Number of prunable weights."""
        return sum(m.numel() for m in self._masks.values())

    @property
    def kept(self) -> int:
        """Number of weights kept."""
        return sum(self.layer_kept().values())

    @property
    def density(self) -> float:
        """Kept / prunable weights."""
        return self.kept / self.total

    @property
    def compression(self) -> float:
        """Prunable / kept weights (inf when nothing is kept)."""
        kept = self.kept
        return self.total / kept if kept else math.inf

    def layer_kept(self) -> dict[str, int]:
        """Kept weights per layer (each layer counted once while its mask is unchanged)."""
        kept = {}
        for name, mask in self._masks.items():
            version, known = _version(mask), self._counts.get(name)
            if known is not None and known[0] == version:
                kept[name] = known[1]
                continue
            kept[name] = int(mask.count_nonzero())
            if version is not None:
                self._counts[name] = (version, kept[name])
        return kept

    def layer_density(self) -> dict[str, float]:
        """Kept / total weights per layer."""
        kept = self.layer_kept()
        return {name: kept[name] / m.numel() for name, m in self._masks.items()}

    def to(self, device: torch.device | str) -> Masks:
        """The same masks on another device (their counts known without counting again)."""
        kept = self.layer_kept()
        return Masks({name: m.to(device) for name, m in self._masks.items()})._remember(kept)

    def check_model(self, model: nn.Module) -> None:
        """Raise unless every mask names a parameter of `model` with the mask's shape."""
        params = dict(model.named_parameters())
        for name, mask in self._masks.items():
            if name not in params:
                raise PaiError(f"mask names parameter {name!r}, which the model does not have")
            if params[name].shape != mask.shape:
                raise PaiError(
                    f"mask {name!r} has shape {tuple(mask.shape)}, "
                    f"the parameter has {tuple(params[name].shape)}"
                )

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """Zero the pruned weights of `model` in place (a fully kept layer is left as it is)."""
        params = dict(model.named_parameters())
        kept = self.layer_kept()
        for name, mask in self._masks.items():
            p = params[name]
            if kept[name] < mask.numel():
                p.mul_(mask.to(p.device))  # the bool factor is read as 0 or 1 of p's dtype

    def save(self, path: str | Path) -> None:
        """Write a plain {name: bool tensor} dict with `torch.save`, atomically."""
        atomic_torch_save({n: m.detach().cpu() for n, m in self._masks.items()}, path)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> Masks:
        """Read a mask file written by `save` (tensors only: `weights_only=True`, so a pickle
        holding code is refused unrun). PaiError, one line, for anything else."""
        path = Path(path)
        expected = "expected a file written by torch.save holding {name: bool tensor}"
        if not path.exists():
            raise PaiError(f"mask file {str(path)!r} does not exist")
        if not path.is_file():
            raise PaiError(f"mask file {str(path)!r} is a folder, not a file; {expected}")
        try:
            data = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as error:  # garbage, truncated, empty, JSON, a pickle with code
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise PaiError(
                f"{str(path)!r} is not a mask file ({type(error).__name__}: "
                f"{reason.split('. ')[0]}); {expected}"
            ) from None
        return as_masks(data, f"mask file {str(path)!r}")

    def to_torch_prune(self, model: nn.Module) -> nn.Module:
        """Attach the masks with `torch.nn.utils.prune.custom_from_mask`, for plain PyTorch use."""
        modules = dict(model.named_modules())
        for name, mask in self._masks.items():
            module_name, _, param_name = name.rpartition(".")
            module = modules[module_name]
            device = getattr(module, param_name).device
            torch_prune.custom_from_mask(module, param_name, mask.to(device))
        return model


def as_masks(masks: Masks | Mapping[str, Tensor], what: str = "masks") -> Masks:
    """`masks` as `Masks`: a plain {name: bool tensor} mapping (what `torch.load` of a mask
    file gives) is wrapped, so it works wherever `Masks` are taken; PaiError for anything else.
    `what` names the value in the message."""
    if isinstance(masks, Masks):
        return masks
    if not isinstance(masks, Mapping):
        raise PaiError(
            f"{what} must map parameter names to bool tensors, got a {type(masks).__name__}"
        )
    for name, mask in masks.items():
        if not isinstance(name, str) or not isinstance(mask, Tensor):
            raise PaiError(
                f"{what} must map parameter names to bool tensors; entry {name!r} holds a "
                f"{type(mask).__name__}"
            )
    try:
        return Masks(masks)
    except PaiError as error:
        raise PaiError(f"{what}: {error}") from None


def keep_topk(
    scores: Mapping[str, Tensor],
    compression: float,
    scope: Scope = "global",
    live: Mapping[str, Tensor] | None = None,
) -> Masks:
    """Keep the highest-scored weights so that exactly `kept_count(total, compression)` survive.

    `global` ranks all layers together; `layerwise` keeps the same fraction of every layer
    (each layer keeps `kept_count(layer size, compression)`). Only weights alive in `live`
    are ranked, so a pruned weight never comes back. Ties break by position: the earlier layer
    (in `scores` order) and then the lower flat index wins, so equal scores give one mask.
    The other density allocators (ER, ERK, ...) are `pai.pruning.allocators.keep_allocated`.
    """
    if scope not in SCOPES:
        raise PaiError(f"unknown scope {scope!r}; choose one of: {', '.join(SCOPES)}")
    live = _live_masks(scores, live)
    if scope == "global":
        total = sum(score.numel() for score in scores.values())
        kept, counts = _keep_count_jointly(scores, live, kept_count(total, compression))
        return Masks(kept)._remember(counts)
    counts = layerwise_counts({n: score.numel() for n, score in scores.items()}, compression)
    return _keep_each(scores, counts, live)


def layerwise_counts(sizes: Mapping[str, int], compression: float) -> dict[str, int]:
    """`kept_count(size, compression)` for every layer: the same fraction of each.

    PaiError when `compression` exceeds the smallest layer's size (it would keep nothing there).
    """
    smallest = min(sizes.values())
    if compression > smallest:
        raise PaiError(
            f"layerwise compression {compression:g} would empty the smallest layer "
            f"({smallest} weights); allowed: 1 to {smallest}"
        )
    return {name: kept_count(size, compression) for name, size in sizes.items()}


def keep_counts(
    scores: Mapping[str, Tensor],
    counts: Mapping[str, int],
    live: Mapping[str, Tensor] | None = None,
) -> Masks:
    """Keep the `counts[n]` highest-scored live weights of every layer n, each layer alone.

    A layer with fewer live weights than its count keeps all of them. Ties break by the lower
    flat index, as in `keep_topk`.
    """
    return _keep_each(scores, counts, _live_masks(scores, live))


def _live_masks(scores: Mapping[str, Tensor], live: Mapping[str, Tensor] | None) -> Masks | None:
    """`live` as `Masks` (whose kept counts are counted once), None when every weight is live."""
    if not live:
        return None
    return live if isinstance(live, Masks) else Masks({name: live[name] for name in scores})


def _keep_each(
    scores: Mapping[str, Tensor], counts: Mapping[str, int], live: Masks | None
) -> Masks:
    """`counts[n]` of the live weights of every layer n, each layer ranked alone."""
    kept, known = {}, {}
    for name in scores:
        layer, count = _keep_count_jointly({name: scores[name]}, live, counts[name])
        kept.update(layer)
        known.update(count)
    return Masks(kept)._remember(known)


def _refuse_nan(name: str, values: Tensor) -> None:
    """PaiError if a live weight's score is NaN (NaN has no place in a ranking)."""
    if values.is_floating_point() and bool(torch.isnan(values).any()):
        raise PaiError(f"scores of {name!r} contain NaN; scores must be comparable numbers")


def _ranking_dtype(scores: Iterable[Tensor]) -> torch.dtype:
    """A dtype that holds every score exactly, so the ranking is that of the scores themselves:
    the floating scores' common type (promotion between floating types is exact), else float64."""
    dtypes = [score.dtype for score in scores]
    if all(dtype.is_floating_point for dtype in dtypes):
        return functools.reduce(torch.promote_types, dtypes)
    return torch.float64


def _keep_count_jointly(
    scores: Mapping[str, Tensor], live: Masks | None, k: int
) -> tuple[dict[str, Tensor], dict[str, int]]:
    """Keep exactly min(k, live weights) of the live weights, best first, ties by position.

    The same selection as a stable descending sort of the live scores (in `scores` order, each
    layer flattened) cut at k, in linear time: every live weight scoring at least the k-th
    largest live score t is kept, and when more than k do, the surplus ties at t are dropped
    from the last positions. NaN among the live scores is an error. The masks are views of
    one flat bool tensor, laid out as the scores are concatenated. Returns the masks and their
    kept counts.
    """
    names = list(scores)
    device = scores[names[0]].device
    dtype = _ranking_dtype(scores.values())
    flat = {n: scores[n].detach().reshape(-1).to(device, dtype) for n in names}
    alive = None if live is None else {n: live[n].reshape(-1).to(device) for n in names}
    sizes = {n: flat[n].numel() for n in names}
    available = sizes if live is None else {n: live.layer_kept()[n] for n in names}
    partial = {n for n in names if available[n] < sizes[n]}
    keep = torch.empty(sum(sizes.values()), dtype=torch.bool, device=device)
    views, start = {}, 0
    for n in names:
        views[n], start = keep[start : start + sizes[n]], start + sizes[n]
    if k >= sum(available.values()) or k <= 0:  # nothing to rank, but every live score is read
        for n in names:
            _refuse_nan(n, flat[n][alive[n]] if n in partial else flat[n])
            if k <= 0:
                views[n].fill_(False)
            elif n in partial:
                views[n].copy_(alive[n])
            else:
                views[n].fill_(True)
        return _shaped(views, scores), {n: available[n] if k > 0 else 0 for n in names}
    candidates = _candidates(flat, alive, partial, k, sum(available.values()))
    ranked = [values for _, values in candidates.values()]
    ranked = ranked[0] if len(ranked) == 1 else torch.cat(ranked)
    threshold = torch.kthvalue(ranked, ranked.numel() - k + 1).values  # the k-th largest
    tallies = []
    for n, (positions, values) in candidates.items():
        if positions is None:  # every position is a candidate
            torch.ge(values, threshold, out=views[n])
            tallies.append(views[n].count_nonzero())
        else:
            above = values >= threshold
            views[n].fill_(False)
            views[n][positions[above]] = True
            tallies.append(above.count_nonzero())
    counts = dict(zip(names, torch.stack(tallies).tolist(), strict=True))  # one device sync
    surplus = sum(counts.values()) - k
    for n in reversed(names):
        if surplus == 0:
            break
        positions, values = candidates[n]
        ties = (values == threshold).nonzero().squeeze(1)
        ties = ties if positions is None else positions[ties]
        dropped = ties[max(ties.numel() - surplus, 0) :]
        views[n][dropped] = False
        counts[n] -= dropped.numel()
        surplus -= dropped.numel()
    return _shaped(views, scores), counts


_SAMPLE = 1 << 16  # scores sampled to bracket the k-th largest; with under 4x as many, rank all


def _candidates(
    flat: Mapping[str, Tensor],
    alive: Mapping[str, Tensor] | None,
    partial: set[str],
    k: int,
    available: int,
) -> dict[str, tuple[Tensor | None, Tensor]]:
    """Per layer, (flat positions, scores) of live weights among which the k largest of the
    `available` live scores lie (positions None: every position, in order); PaiError for NaN.

    A strided sample of the live scores gives a bound that, with a margin of five standard
    deviations of the sample's count, at least k live scores reach; only those are candidates.
    The k largest scores all reach a bound that k scores reach, so nothing is lost; when fewer
    than k reach it (scores arranged against the sample), every live weight is a candidate.
    NaN compares false, so `not below the bound` keeps NaN among the candidates to be found.
    """

    def chosen(name: str, bound: Tensor | None) -> tuple[Tensor | None, Tensor]:
        where = alive[name] if name in partial else None
        if bound is not None:
            reached = torch.lt(flat[name], bound).logical_not_()
            where = reached if where is None else reached.logical_and_(where)
        if where is None:
            positions, values = None, flat[name]
        else:
            positions = where.nonzero().squeeze(1)
            values = flat[name][positions]
        _refuse_nan(name, values)
        return positions, values

    if available > 4 * _SAMPLE:
        stride = max(1, sum(f.numel() for f in flat.values()) // _SAMPLE)
        parts = [
            flat[n][::stride][alive[n][::stride]] if n in partial else flat[n][::stride]
            for n in flat
        ]
        sample = parts[0] if len(parts) == 1 else torch.cat(parts)
        expected = k * sample.numel() / available
        rank = math.ceil(expected + 5 * math.sqrt(expected) + 5)
        if rank < sample.numel():
            bound = torch.kthvalue(sample, sample.numel() - rank + 1).values
            found = {n: chosen(n, bound) for n in flat}
            if sum(values.numel() for _, values in found.values()) >= k:
                return found
    return {n: chosen(n, None) for n in flat}


def _shaped(flat: Mapping[str, Tensor], like: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Each flat tensor in the shape of its namesake in `like`."""
    return {name: tensor.reshape(like[name].shape) for name, tensor in flat.items()}
