"""Pruning masks: which weights are kept, and the keep-top-k rule every method shares.

A mask maps a parameter name (as in `model.named_parameters()`) to a bool tensor of that
parameter's shape; True means kept. Compression = prunable weights / kept weights (10 means 90%
pruned) and density = 1 / compression, as in Blalock et al. (2020).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from pai.core.atomic import atomic_torch_save
from pai.core.errors import PaiError

Scope = Literal["global", "layerwise"]
SCOPES: tuple[str, ...] = ("global", "layerwise")


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


class Masks(Mapping[str, Tensor]):
    """An immutable mapping from parameter name to a bool keep-mask of the parameter's shape."""

    def __init__(self, masks: Mapping[str, Tensor]):
        for name, mask in masks.items():
            if mask.dtype != torch.bool:
                raise PaiError(f"mask {name!r} has dtype {mask.dtype}; masks must be torch.bool")
        self._masks = dict(masks)

    @classmethod
    def dense(cls, model: nn.Module, exclude: tuple[str, ...] = ()) -> Masks:
        """Every prunable weight kept."""
        return cls(
            {
                name: torch.ones_like(p, dtype=torch.bool)
                for name, p in prunable_parameters(model, exclude).items()
            }
        )

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
        return sum(int(m.sum()) for m in self._masks.values())

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
        """Kept weights per layer."""
        return {name: int(m.sum()) for name, m in self._masks.items()}

    def layer_density(self) -> dict[str, float]:
        """Kept / total weights per layer."""
        return {name: int(m.sum()) / m.numel() for name, m in self._masks.items()}

    def to(self, device: torch.device | str) -> Masks:
        """The same masks on another device."""
        return Masks({name: m.to(device) for name, m in self._masks.items()})

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
        """Zero the pruned weights of `model` in place."""
        params = dict(model.named_parameters())
        for name, mask in self._masks.items():
            p = params[name]
            p.mul_(mask.to(device=p.device, dtype=p.dtype))

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
    names = list(scores)
    live = live or {n: torch.ones_like(scores[n], dtype=torch.bool) for n in names}
    _check_comparable(scores, live)
    if scope == "global":
        total = sum(scores[n].numel() for n in names)
        return _keep_count_jointly(scores, live, kept_count(total, compression))
    counts = layerwise_counts({n: scores[n].numel() for n in names}, compression)
    return keep_counts(scores, counts, live)


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
    live = live or {n: torch.ones_like(scores[n], dtype=torch.bool) for n in scores}
    _check_comparable(scores, live)
    return Masks(
        {n: _keep_count_jointly({n: scores[n]}, {n: live[n]}, counts[n])[n] for n in scores}
    )


def _check_comparable(scores: Mapping[str, Tensor], live: Mapping[str, Tensor]) -> None:
    """PaiError if a live weight's score is NaN (NaN has no place in a ranking)."""
    for name in scores:
        if torch.isnan(scores[name][live[name]]).any():
            raise PaiError(f"scores of {name!r} contain NaN; scores must be comparable numbers")


def _keep_count_jointly(scores: Mapping[str, Tensor], live: Mapping[str, Tensor], k: int) -> Masks:
    """Keep exactly min(k, live weights) of the live weights, best first, ties by position."""
    names = list(scores)
    device = scores[names[0]].device
    flat_scores = torch.cat(
        [scores[n].detach().reshape(-1).to(device, torch.float64) for n in names]
    )
    flat_live = torch.cat([live[n].reshape(-1).to(device) for n in names])
    live_index = flat_live.nonzero().squeeze(1)
    keep = torch.zeros_like(flat_live)
    keep[live_index[_top_positions(flat_scores[live_index], k)]] = True
    out, start = {}, 0
    for n in names:
        size = scores[n].numel()
        out[n] = keep[start : start + size].reshape(scores[n].shape)
        start += size
    return Masks(out)


def _top_positions(values: Tensor, k: int) -> Tensor:
    """Positions of the k largest values, ties broken by lower position.

    The same selection as a stable descending sort cut at k, in linear time: everything above
    the k-th largest value is kept, and the remaining places go to the first positions equal
    to it.
    """
    if k >= values.numel():
        return torch.arange(values.numel(), device=values.device)
    threshold = torch.topk(values, k, sorted=False).values.min()
    above = (values > threshold).nonzero().squeeze(1)
    ties = (values == threshold).nonzero().squeeze(1)
    return torch.cat([above, ties[: k - above.numel()]])
