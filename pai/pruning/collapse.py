"""Layer collapse, effective sparsity and critical compression.

Layer collapse (Tanaka et al. 2020, "Pruning neural networks without any data by iteratively
conserving synaptic flow"): a prunable layer with no weight left cuts every path from input to
output. The critical compression is the largest compression at which no layer has collapsed;
no method can exceed rho_max = N / L (N prunable weights, L prunable layers), where every layer
keeps exactly one weight.

Effective sparsity (Vysogorets & Kempe 2023, "Connectivity matters: neural network pruning
through the lens of effective sparsity"): a kept weight is effective when it lies on some path
from an input to an output of the masked network; the others can be removed without changing
the function. A network is disconnected when no such path is left.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from pai.core.errors import PaiError, unknown_name
from pai.models import model_input_shape
from pai.pruning.allocators import Allocator, resolve_allocator
from pai.pruning.choices import COLLAPSE_CRITERIA
from pai.pruning.driver import compute_scores, prune
from pai.pruning.masks import Masks, as_masks
from pai.pruning.registry import Scorer, resolve_scorer

Criterion = Literal["layer", "path"]
CRITERIA = COLLAPSE_CRITERIA
SEARCHES: tuple[str, ...] = ("exact", "bisection", "scan")

# Element-wise activations only shape values along a path, they never connect units, so the
# connectivity pass replaces them by the identity (positive inputs stay positive).
_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Hardswish, nn.Hardtanh, nn.Tanh, nn.Sigmoid, nn.Softplus,
)  # fmt: skip
# Normalization rescales units by statistics; it carries no weighted connection of its own.
_NORMALIZATIONS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LayerNorm,
    nn.GroupNorm,
)
_AVERAGE_POOLS: dict[type[nn.Module], type[nn.Module]] = {
    nn.MaxPool1d: nn.AvgPool1d,
    nn.MaxPool2d: nn.AvgPool2d,
    nn.MaxPool3d: nn.AvgPool3d,
}
_ADAPTIVE_AVERAGE_POOLS: dict[type[nn.Module], type[nn.Module]] = {
    nn.AdaptiveMaxPool1d: nn.AdaptiveAvgPool1d,
    nn.AdaptiveMaxPool2d: nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool3d: nn.AdaptiveAvgPool3d,
}


def layer_collapse(masks: Masks | Mapping[str, Tensor]) -> list[str]:
    """The masked layers with no weight left, in mask order; empty when nothing collapsed."""
    return [name for name, mask in as_masks(masks).items() if not bool(mask.any())]


class _Reachable(torch.autograd.Function):
    """1[x > 0] forward and 1[g > 0] backward: whether a unit is reached, never how often.

    Placed after every Conv and Linear layer, it keeps every value a small count: raw path
    counts grow like the product of the layers' fan-ins (64^200 for 200 layers of width 64,
    past float64's range), and rescaling them instead would underflow on sparse deep nets.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return (grad > 0).to(grad.dtype)


def _connectivity_copy(model: nn.Module) -> nn.Module:
    """A float64 copy of `model` in which a positive value means "reached by some path".

    Activations and normalization layers become the identity, max pools become average pools of
    the same window (an all-positive input makes a max pool pass gradient through one position
    only, which would mark the other weights of its window dead although they connect),
    every bias is zero (flow entering mid-network is no path from the input) and every
    parameter other than a bias is one; masked weights are set per call. Pools written as
    functions in `forward` (F.max_pool2d) cannot be replaced: such models need module pools.
    """
    work = copy.deepcopy(model).to(torch.float64).eval()
    for name, module in list(work.named_modules()):
        replacement: nn.Module | None = None
        if isinstance(module, (*_ACTIVATIONS, *_NORMALIZATIONS)):
            replacement = nn.Identity()
        elif type(module) in _AVERAGE_POOLS:
            dilation = module.dilation
            if any(d != 1 for d in ((dilation,) if isinstance(dilation, int) else dilation)):
                raise PaiError(
                    f"{name!r} is a dilated max pool, which has no average-pool counterpart; "
                    "effective masks support max pools with dilation 1"
                )
            replacement = _AVERAGE_POOLS[type(module)](
                module.kernel_size, module.stride, module.padding, module.ceil_mode
            )
        elif type(module) in _ADAPTIVE_AVERAGE_POOLS:
            replacement = _ADAPTIVE_AVERAGE_POOLS[type(module)](module.output_size)
        if replacement is not None:
            parent_name, _, child = name.rpartition(".")
            setattr(work.get_submodule(parent_name), child, replacement)
    with torch.no_grad():
        for name, p in work.named_parameters():
            p.requires_grad_(False)
            p.fill_(0.0 if name.rpartition(".")[2] == "bias" else 1.0)
    for module in work.modules():
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            module.register_forward_hook(lambda _module, _inputs, output: _Reachable.apply(output))
    return work


class _Connectivity:
    """The connectivity pass of one model, built once and reused for many masks.

    With every kept weight 1 and the all-ones input, a unit's value is positive exactly when
    some path of kept weights reaches it from the input, and dR/dw of a kept weight w (R the
    sum of the outputs) is positive exactly when w also reaches an output: w is effective.
    """

    def __init__(self, model: nn.Module, input_shape: Sequence[int] | None = None):
        self.work = _connectivity_copy(model)
        device = next(model.parameters()).device
        shape = model_input_shape(model, input_shape)
        self.ones = torch.ones(1, *shape, dtype=torch.float64, device=device)

    def effective(self, masks: Masks) -> Masks:
        masks.check_model(self.work)
        weights = {name: self.work.get_parameter(name) for name in masks}
        with torch.no_grad():
            for name, w in weights.items():
                w.copy_(masks[name])
                w.requires_grad_(True)
        try:
            output = self.work(self.ones)
            if not isinstance(output, Tensor):
                raise PaiError(
                    f"effective masks need a model that returns one tensor, "
                    f"got {type(output).__name__}"
                )
            grads = torch.autograd.grad(
                output.sum(), list(weights.values()), materialize_grads=True
            )
        finally:
            for w in weights.values():
                w.requires_grad_(False)
        return Masks(
            {
                name: masks[name] & (grad > 0).to(masks[name].device)
                for (name, grad) in zip(weights, grads, strict=True)
            }
        )


def effective_masks(
    model: nn.Module, masks: Masks | Mapping[str, Tensor], input_shape: Sequence[int] | None = None
) -> Masks:
    """The kept weights that lie on some input-output path of the masked network.

    Computed by one forward and backward pass of a connectivity copy of `model` on its device
    (see `_connectivity_copy`: activations and normalizations as the identity, max pools as
    average pools, biases zero), so residual networks work as they are. All False when the
    network is disconnected. `model` is left unchanged; `input_shape` defaults to the model's.
    """
    return _Connectivity(model, input_shape).effective(as_masks(masks))


def effective_compression(
    model: nn.Module, masks: Masks | Mapping[str, Tensor], input_shape: Sequence[int] | None = None
) -> float:
    """Prunable weights / effective weights; inf when the network is disconnected."""
    return effective_masks(model, masks, input_shape).compression


@dataclass(frozen=True)
class Probe:
    """One mask a search looked at: its target compression and the layers it left empty.

    `connected` is whether an input-output path was left (None when not checked: criterion
    "layer").
    """

    compression: float
    collapsed_layers: tuple[str, ...]
    connected: bool | None = None


class CriticalCompression(float):
    """A critical compression: the float is the ratio itself (prunable / kept weights).

    `first_collapsed_layer` is the layer left empty just past it (None when nothing collapsed
    up to `max_compression`, rho_max = N / L). `method` is how it was found: "exact" from the
    score order, "bisection" or "scan" over prune calls; `collapsed_at` is the nearest
    compression above it where the criterion failed (None if none was seen). `probes` lists the
    masks examined, and `layer_limits` (exact layer criterion only) the largest compression at
    which each layer still keeps a weight.
    """

    first_collapsed_layer: str | None
    max_compression: float
    method: str
    criterion: str
    prune_calls: int
    collapsed_at: float | None
    probes: tuple[Probe, ...]
    layer_limits: dict[str, float] | None

    def __new__(
        cls,
        value: float,
        *,
        first_collapsed_layer: str | None,
        max_compression: float,
        method: str,
        criterion: str,
        prune_calls: int,
        collapsed_at: float | None = None,
        probes: tuple[Probe, ...] = (),
        layer_limits: dict[str, float] | None = None,
    ) -> CriticalCompression:
        if not 1 <= value <= max_compression * (1 + 1e-12):
            raise PaiError(
                f"critical compression {value!r} lies outside 1 to rho_max = {max_compression!r}"
            )
        result = super().__new__(cls, min(value, max_compression))
        result.first_collapsed_layer = first_collapsed_layer
        result.max_compression = max_compression
        result.method = method
        result.criterion = criterion
        result.prune_calls = prune_calls
        result.collapsed_at = collapsed_at
        result.probes = probes
        result.layer_limits = layer_limits
        return result

    def __reduce_ex__(self, protocol: int):  # float's own would drop the attributes
        attributes = {
            "first_collapsed_layer": self.first_collapsed_layer,
            "max_compression": self.max_compression,
            "method": self.method,
            "criterion": self.criterion,
            "prune_calls": self.prune_calls,
            "collapsed_at": self.collapsed_at,
            "probes": self.probes,
            "layer_limits": self.layer_limits,
        }
        return _rebuild_critical_compression, (float(self), attributes)

    @property
    def log10(self) -> float:
        """log10 of the critical compression, the unit of SynFlow's Fig. 1."""
        return math.log10(self)

    def __repr__(self) -> str:
        return (
            f"CriticalCompression({float(self):.6g}, log10 {self.log10:.3f}, first collapsed "
            f"{self.first_collapsed_layer!r}, rho_max {self.max_compression:.6g}, "
            f"{self.method}, {self.criterion})"
        )


def _rebuild_critical_compression(value: float, kwargs: dict[str, Any]) -> CriticalCompression:
    return CriticalCompression(value, **kwargs)


def _flat_ranks(scores: dict[str, Tensor]) -> dict[str, Tensor]:
    """Each weight's 0-based place in keep_topk's global order, by layer.

    keep_topk keeps the k first places: highest score first, ties by layer order (that of
    `scores`) and then by flat index, as a stable descending sort of the concatenation gives.
    """
    names = list(scores)
    flat = torch.cat([scores[n].detach().reshape(-1).to(torch.float64) for n in names])
    order = torch.sort(flat, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(len(order), device=order.device)
    out, start = {}, 0
    for n in names:
        size = scores[n].numel()
        out[n] = ranks[start : start + size].reshape(scores[n].shape)
        start += size
    return out


def _search(
    probe: Callable[[float], Probe],
    failed: Callable[[Probe], bool],
    top: float,
    resolution: float,
    search: str,
) -> tuple[float, Probe | None, list[Probe]]:
    """The largest compression in [1, top] whose probe does not fail, to `resolution` decades.

    "scan" walks down the grid log10(top) - i * resolution and stops at the first compression
    that does not fail: the largest such grid point, whatever the shape of the failure set.
    "bisection" assumes failure is monotone in compression (fails at c => fails above c) and
    halves [0, log10 top] until it is `resolution` wide. Returns the compression, the nearest
    failing probe above it, and every probe made. Compression 1 (the dense network) counts as
    passing without a probe; callers check it beforehand where it could fail.
    """
    probes: list[Probe] = []
    first = probe(top)
    probes.append(first)
    if not failed(first):
        return top, None, probes
    above = first
    if search == "scan":
        steps = math.ceil(math.log10(top) / resolution - 1e-9)
        for step in range(1, steps + 1):
            compression = 10 ** max(0.0, math.log10(top) - step * resolution)
            if compression == 1.0:
                return 1.0, above, probes
            result = probe(compression)
            probes.append(result)
            if not failed(result):
                return compression, above, probes
            above = result
        return 1.0, above, probes
    low, high = 0.0, math.log10(top)
    while high - low > resolution:
        middle = (low + high) / 2
        result = probe(10**middle)
        probes.append(result)
        if failed(result):
            high, above = middle, result
        else:
            low = middle
    return 10**low, above, probes


def critical_compression(
    model: nn.Module,
    scorer: str | Scorer,
    *,
    data: Iterable[tuple[Tensor, Tensor]] | None = None,
    rounds: int | None = None,
    scope: str | Allocator = "global",
    seed: int = 0,
    resolution: float = 0.05,
    criterion: Criterion = "layer",
    input_shape: Sequence[int] | None = None,
    schedule: str = "exponential",
    device: torch.device | str | None = None,
    search: str | None = None,
) -> CriticalCompression:
    """The largest compression at which `scorer` leaves no prunable layer empty.

    Criterion "layer" is Tanaka et al.'s (2020) layer collapse; "path" asks instead that some
    input-output path is left (see `effective_masks`). Never more than rho_max = N / L.

    One-shot global pruning (rounds 1) is solved exactly from one round of scores: the top-k
    masks are nested in k, so with k* the smallest kept count at which every layer keeps its
    best-ranked weight (ties ranked as keep_topk ranks them), the answer is N / k*. Pruning at
    that compression keeps kept_count(N, N / k*) = k* weights, and any compression above
    N / (k* - 1/2) keeps k* - 1 or fewer and collapses (kept counts round half up).

    Other settings prune once per probed compression. Iterative pruning to different targets
    gives masks that are not nested, so collapse need not be monotone in compression: the
    default search is a "scan" down a grid of `resolution` decades from rho_max, which finds the
    largest collapse-free grid point without that assumption. `search="bisection"` takes
    log2(decades / resolution) prune calls instead and is exact when collapse is monotone; it
    is the default for one-shot layerwise pruning, whose masks are nested.
    """
    scorer = resolve_scorer(scorer)
    _check_request(scorer, criterion, resolution)
    allocator = resolve_allocator(scope)
    rounds = scorer.default_rounds if rounds is None else rounds
    search = _choose_search(search, rounds, allocator.joint, scope)
    dense = Masks.dense(model)
    max_compression = dense.total / len(dense)
    check = _CollapseCheck(model, criterion, input_shape)
    if criterion == "path" and check.failed(check.examine(1.0, dense)):
        raise PaiError("the dense network is already disconnected: no input reaches an output")

    batches = None if data is None else list(data)
    common = {"data": batches, "input_shape": input_shape, "seed": seed, "device": device}
    if search == "exact":
        ranks = _flat_ranks(compute_scores(model, scorer, **common))
        return _exact(ranks, check.examine, check.failed, max_compression, criterion)

    probes_made = []

    def probe(compression: float) -> Probe:
        probes_made.append(compression)
        masks = prune(
            model, scorer, compression, rounds=rounds, schedule=schedule, scope=scope, **common
        )
        return check.examine(compression, masks)

    # layerwise pruning accepts compressions up to the smallest layer's size, the others N / L
    top = float(min(m.numel() for m in dense.values())) if scope == "layerwise" else max_compression
    value, above, probes = _search(probe, check.failed, top, resolution, search)
    return CriticalCompression(
        value,
        first_collapsed_layer=_first_collapsed(above),
        max_compression=max_compression,
        method=search,
        criterion=criterion,
        prune_calls=len(probes_made),
        collapsed_at=None if above is None else above.compression,
        probes=tuple(probes),
    )


def _check_request(scorer: Scorer, criterion: str, resolution: float) -> None:
    """PaiError naming the first argument of `critical_compression` that is not allowed."""
    if getattr(scorer, "needs_training", False):
        raise PaiError(
            f"scorer {scorer.name!r} finds its mask by training; critical compression is defined "
            "for scorers that prune at initialization"
        )
    if criterion not in CRITERIA:
        raise unknown_name("criterion", criterion, CRITERIA)
    if not math.isfinite(resolution) or resolution <= 0:
        raise PaiError(f"resolution must be a positive number of decades, got {resolution!r}")


def _choose_search(search: str | None, rounds: int, joint: bool, scope: object) -> str:
    """The search `critical_compression` runs: exact for one-shot joint ranking, bisection for
    other one-shot pruning (nested masks), a scan for iterative pruning; or the one asked."""
    one_shot_global = rounds == 1 and joint
    if search is None:
        search = "exact" if one_shot_global else ("bisection" if rounds == 1 else "scan")
    if search not in SEARCHES:
        raise unknown_name("search", search, SEARCHES)
    if search == "exact" and not one_shot_global:
        raise PaiError(
            f"search 'exact' needs one-shot global pruning, got rounds={rounds}, scope={scope!r}; "
            "use 'scan' or 'bisection'"
        )
    return search


class _CollapseCheck:
    """Whether a mask has collapsed under a criterion: an empty layer, or no path left."""

    def __init__(self, model: nn.Module, criterion: str, input_shape: Sequence[int] | None):
        self.criterion = criterion
        self.connectivity = _Connectivity(model, input_shape) if criterion == "path" else None

    def examine(self, compression: float, masks: Masks) -> Probe:
        connected = None
        if self.connectivity is not None:
            connected = self.connectivity.effective(masks).kept > 0
        return Probe(compression, tuple(layer_collapse(masks)), connected)

    def failed(self, result: Probe) -> bool:
        return bool(result.collapsed_layers) if self.criterion == "layer" else not result.connected


def _first_collapsed(result: Probe | None) -> str | None:
    """The first empty layer (in model order) of a failing probe, if any."""
    return result.collapsed_layers[0] if result is not None and result.collapsed_layers else None


def _exact(
    ranks: dict[str, Tensor],
    examine: Callable[[float, Masks], Probe],
    failed: Callable[[Probe], bool],
    max_compression: float,
    criterion: str,
) -> CriticalCompression:
    """Critical compression of the nested top-k masks, from each weight's place in the order.

    Layer criterion: a layer is empty while k <= its best place, so k* = max best place + 1.
    Path criterion: connectivity only grows with k, so k* is found by bisection over k in
    [L, N] (L kept weights is rho_max; a residual net may stay connected with fewer).
    """
    total = sum(r.numel() for r in ranks.values())
    layers = len(ranks)

    def masks_at(kept: int) -> Masks:
        return Masks({name: r < kept for name, r in ranks.items()})

    best = {name: int(r.min()) for name, r in ranks.items()}
    probes: list[Probe] = []
    if criterion == "layer":
        needed = max(best.values()) + 1
    else:
        low, high = layers, total
        while low < high:
            middle = (low + high) // 2
            result = examine(total / middle, masks_at(middle))
            probes.append(result)
            low, high = (middle + 1, high) if failed(result) else (low, middle)
        needed = low
    above = None
    if needed > 1 and (criterion == "layer" or needed > layers):
        above = examine(total / (needed - 1), masks_at(needed - 1))
        probes.append(above)
    return CriticalCompression(
        total / needed,
        first_collapsed_layer=_first_collapsed(above),
        max_compression=max_compression,
        method="exact",
        criterion=criterion,
        prune_calls=1,
        collapsed_at=None if above is None else above.compression,
        probes=tuple(probes),
        layer_limits={n: total / (p + 1) for n, p in best.items()}
        if criterion == "layer"
        else None,
    )
