"""The scorer protocol and the registry that finds scorers.

A scorer maps (model, current masks, context) to one score per prunable weight; higher means
more worth keeping. Every scorer, built-in or third-party, is found the same way: through the
`pai.scorers` entry-point group of an installed distribution (pai declares its own built-ins
there, in `pyproject.toml`). `register_scorer` adds one in-process, for notebooks. A plugin that
fails to import is recorded with its error instead of breaking discovery.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pai.core.errors import PaiError, unknown_name
from pai.pruning.masks import Masks

ENTRY_POINT_GROUP = "pai.scorers"
IN_PROCESS = "in-process"

logger = logging.getLogger(__name__)


@dataclass
class ScoringContext:
    """What a scorer may use besides the model and masks.

    `data` is the list of (inputs, targets) batches on `device` (None when none was given);
    `input_shape` is one example's shape without the batch dimension (None when unknown);
    `generator` is the seeded CPU generator every random draw must come from.
    """

    data: list[tuple[Tensor, Tensor]] | None
    input_shape: tuple[int, ...] | None
    generator: torch.Generator
    device: torch.device


class Scorer:
    """The scorer protocol, and a base class whose gradient methods make a scorer a few lines.

    A scorer declares `name`, `needs_data`, `default_rounds` (pruning rounds when the caller
    gives none), a one-line `description`, and `needs_training` (True only for methods that find
    their mask by training, which `pai.prune` cannot run). `score(model, masks, context)`
    returns a dict with one floating tensor per name in `masks`, of that parameter's shape;
    higher means more worth keeping, and only live weights are ranked.

    `model` is the pruning driver's private copy: on `context.device`, in eval mode, with the
    pruned weights already zero and `requires_grad` set on exactly the masked parameters. It is
    reused across rounds, so `score` must not modify it.
    """

    name: str = ""
    needs_data: bool = False
    default_rounds: int = 1
    description: str = ""
    needs_training: bool = False

    def score(self, model: nn.Module, masks: Masks, context: ScoringContext) -> dict[str, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} does not implement score()")

    def __repr__(self) -> str:
        return f"<scorer {self.name!r}>"

    @staticmethod
    def weights(model: nn.Module, masks: Masks) -> dict[str, nn.Parameter]:
        """The masked parameters of `model`, by name."""
        return {name: model.get_parameter(name) for name in masks}

    @staticmethod
    def batch_losses(
        model: nn.Module, context: ScoringContext, temperature: float = 1.0
    ) -> Iterator[Tensor]:
        """One term per batch whose sum is L: the mean cross-entropy over all examples.

        Each term is the batch's summed cross-entropy (of logits / `temperature`) divided by
        the total number of examples, so batches are weighted by their size.
        """
        if not context.data:
            raise PaiError("this scorer needs data: pass data= as (inputs, targets) batches")
        examples = sum(len(targets) for _, targets in context.data)
        for inputs, targets in context.data:
            logits = model(inputs) / temperature
            yield F.cross_entropy(logits, targets, reduction="sum") / examples

    @staticmethod
    def gradients(
        output: Tensor, wrt: dict[str, Tensor], create_graph: bool = False
    ) -> dict[str, Tensor]:
        """d output / dt for every tensor t in `wrt` (zero where `output` does not depend on t)."""
        grads = torch.autograd.grad(
            output, list(wrt.values()), create_graph=create_graph, materialize_grads=True
        )
        return dict(zip(wrt, grads, strict=True))

    @classmethod
    def loss_gradients(
        cls, model: nn.Module, masks: Masks, context: ScoringContext, temperature: float = 1.0
    ) -> dict[str, Tensor]:
        """dL/dw for every masked parameter w, L the mean cross-entropy over `context.data`."""
        weights = cls.weights(model, masks)
        grads = {name: torch.zeros_like(w) for name, w in weights.items()}
        for loss in cls.batch_losses(model, context, temperature):
            for name, grad in cls.gradients(loss, weights).items():
                grads[name] += grad
        return grads


@dataclass(frozen=True)
class ScorerEntry:
    """A discovered scorer, or the error that kept it from loading (`scorer` is then None)."""

    name: str
    source: str  # the distribution declaring it, or "in-process"
    scorer: Scorer | None
    error: str | None = None


_entry_point_scorers: dict[str, ScorerEntry] | None = None
_in_process_scorers: dict[str, ScorerEntry] = {}


def _check_protocol(scorer: Any) -> Scorer:
    """`scorer` itself if it has the protocol's attributes with the right types, else PaiError."""
    expected = {"name": str, "needs_data": bool, "default_rounds": int, "description": str}
    for attribute, kind in expected.items():
        if not isinstance(getattr(scorer, attribute, None), kind):
            raise PaiError(f"{scorer!r} is not a scorer: {attribute!r} must be a {kind.__name__}")
    if not scorer.name:
        raise PaiError(f"{scorer!r} is not a scorer: its name is empty")
    if scorer.default_rounds < 1:
        raise PaiError(f"scorer {scorer.name!r}: default_rounds must be >= 1")
    if not callable(getattr(scorer, "score", None)):
        raise PaiError(f"{scorer!r} is not a scorer: it has no score() method")
    return scorer


def _instance(obj: Any) -> Scorer:
    """A scorer instance from a scorer class (instantiated without arguments) or instance."""
    return _check_protocol(obj() if isinstance(obj, type) else obj)


def _scan_entry_points() -> dict[str, ScorerEntry]:
    """Load every `pai.scorers` entry point, recording import and protocol errors by name."""
    found: dict[str, ScorerEntry] = {}
    importlib.invalidate_caches()
    for point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda p: p.name):
        source = point.dist.name if point.dist is not None else "unknown distribution"
        if point.name in found:
            previous = found[point.name].source
            error = f"declared by more than one distribution ({previous} and {source})"
            found[point.name] = ScorerEntry(point.name, f"{previous}, {source}", None, error)
            continue
        try:
            scorer = _instance(point.load())
            if scorer.name != point.name:
                raise PaiError(f"entry point {point.name!r} loads a scorer named {scorer.name!r}")
        except Exception as error:  # a broken plugin must not break discovery
            message = f"{type(error).__name__}: {error}"
            logger.info("scorer plugin %r (%s) failed to load: %s", point.name, source, message)
            found[point.name] = ScorerEntry(point.name, source, None, message)
        else:
            found[point.name] = ScorerEntry(point.name, source, scorer)
    return found


def rescan_scorers() -> None:
    """Forget the cached entry-point scan, so newly installed plugins are found."""
    global _entry_point_scorers
    _entry_point_scorers = None


def scorer_entries() -> list[ScorerEntry]:
    """Every discovered scorer, broken ones included, sorted by name.

    In-process registrations take precedence over entry points of the same name.
    """
    global _entry_point_scorers
    if _entry_point_scorers is None:
        _entry_point_scorers = _scan_entry_points()
    merged = {**_entry_point_scorers, **_in_process_scorers}
    return [merged[name] for name in sorted(merged)]


def available_scorers() -> list[str]:
    """Names of the scorers that loaded, sorted."""
    return [entry.name for entry in scorer_entries() if entry.scorer is not None]


def get_scorer(name: str) -> Scorer:
    """The registered scorer called `name`; PaiError listing the registered ones otherwise."""
    entries = {entry.name: entry for entry in scorer_entries()}
    entry = entries.get(name)
    if entry is None:
        raise unknown_name("scorer", name, available_scorers())
    if entry.scorer is None:
        raise PaiError(f"scorer {name!r} (from {entry.source}) failed to load: {entry.error}")
    return entry.scorer


ScorerT = TypeVar("ScorerT")


def register_scorer(scorer: ScorerT) -> ScorerT:
    """Register a scorer class (instantiated without arguments) or instance in this process.

    Usable as a class decorator; returns its argument unchanged. Registering a name again
    replaces the earlier registration (re-running a notebook cell), and an in-process scorer
    shadows an installed one of the same name.
    """
    instance = _instance(scorer)
    _in_process_scorers[instance.name] = ScorerEntry(instance.name, IN_PROCESS, instance)
    return scorer


def unregister_scorer(name: str) -> None:
    """Remove an in-process registration (installed plugins are removed by uninstalling)."""
    if name not in _in_process_scorers:
        raise unknown_name("in-process scorer", name, _in_process_scorers)
    del _in_process_scorers[name]


def resolve_scorer(scorer: str | Scorer) -> Scorer:
    """A scorer given by name (looked up) or as an object (checked against the protocol)."""
    return get_scorer(scorer) if isinstance(scorer, str) else _check_protocol(scorer)
