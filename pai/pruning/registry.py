"""The scorer protocol and the registry that finds scorers.

A scorer maps (model, current masks, context) to one score per prunable weight; higher means
more worth keeping. Every scorer, built-in or third-party, is found the same way: through the
`pai.scorers` entry-point group of an installed distribution (pai declares its own built-ins
there, in `pyproject.toml`). `register_scorer` adds one in-process, for notebooks. A plugin that
fails to import is recorded with its error instead of breaking discovery. `PluginRegistry` is
that discovery for any entry-point group (`pai.core.plugins`); density allocators use it too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pai.core.errors import PaiError
from pai.core.plugins import (
    IN_PROCESS,  # noqa: F401  (read from here by the experiments)
    SCORERS,
    PluginEntry,
    PluginRegistry,
)
from pai.pruning.masks import Masks

ENTRY_POINT_GROUP = SCORERS


@dataclass
class ScoringContext:
    """What a scorer may use besides the model and masks.

    `data` is the list of (inputs, targets) batches on `device` (None when none was given);
    `input_shape` is one example's shape without the batch dimension (None when unknown);
    `generator` is the seeded CPU generator every random draw must come from.
    `original_weights` holds the masked parameters as the model was given, before any round
    pruned them; the driver sets it only for scorers that allow revival (FORCE), which score
    pruned weights as if they came back.
    """

    data: list[tuple[Tensor, Tensor]] | None
    input_shape: tuple[int, ...] | None
    generator: torch.Generator
    device: torch.device
    original_weights: dict[str, Tensor] | None = None


class Scorer:
    """The scorer protocol, and a base class whose gradient methods make a scorer a few lines.

    A scorer declares `name`, `needs_data`, `default_rounds` (pruning rounds when the caller
    gives none), a one-line `description`, `needs_training` (True only for methods that find
    their mask by training, which `pai.prune` cannot run) and `allows_revival` (True only for
    methods whose later rounds may bring back weights pruned by earlier ones, FORCE).
    `score(model, masks, context)` returns a dict with one floating tensor per name in `masks`,
    of that parameter's shape; higher means more worth keeping, and only live weights are
    ranked (with `allows_revival`, every weight live in the starting masks).

    `model` is the pruning driver's private copy: on `context.device`, in eval mode, with the
    pruned weights already zero and `requires_grad` set on exactly the masked parameters. It is
    reused across rounds, so `score` must not modify it.
    """

    name: str = ""
    needs_data: bool = False
    default_rounds: int = 1
    description: str = ""
    needs_training: bool = False
    allows_revival: bool = False

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


class ScorerEntry(PluginEntry[Scorer]):
    """A discovered scorer, or the error that kept it from loading (`scorer` is then None)."""

    @property
    def scorer(self) -> Scorer | None:
        return self.plugin


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
    for flag in ("needs_training", "allows_revival"):  # optional, False when absent
        if not isinstance(getattr(scorer, flag, False), bool):
            raise PaiError(f"{scorer!r} is not a scorer: {flag!r} must be a bool")
    if not callable(getattr(scorer, "score", None)):
        raise PaiError(f"{scorer!r} is not a scorer: it has no score() method")
    return scorer


_SCORERS: PluginRegistry[Scorer] = PluginRegistry(
    ENTRY_POINT_GROUP, "scorer", _check_protocol, ScorerEntry
)


def _instance(obj: Any) -> Scorer:
    """A scorer instance from a scorer class (instantiated without arguments) or instance."""
    return _SCORERS.instance(obj)


def rescan_scorers() -> None:
    """Forget the cached entry-point scan, so newly installed plugins are found."""
    _SCORERS.rescan()


def scorer_entries() -> list[ScorerEntry]:
    """Every discovered scorer, broken ones included, sorted by name.

    In-process registrations take precedence over entry points of the same name.
    """
    return _SCORERS.entries()  # type: ignore[return-value]  # built by ScorerEntry


def available_scorers() -> list[str]:
    """Names of the scorers that loaded, sorted."""
    return _SCORERS.available()


def get_scorer(name: str) -> Scorer:
    """The registered scorer called `name`; PaiError listing the registered ones otherwise."""
    return _SCORERS.get(name)


ScorerT = TypeVar("ScorerT")


def register_scorer(scorer: ScorerT) -> ScorerT:
    """Register a scorer class (instantiated without arguments) or instance in this process.

    Usable as a class decorator; returns its argument unchanged. Registering a name again
    replaces the earlier registration (re-running a notebook cell), and an in-process scorer
    shadows an installed one of the same name.
    """
    _SCORERS.register(scorer)
    return scorer


def unregister_scorer(name: str) -> None:
    """Remove an in-process registration (installed plugins are removed by uninstalling)."""
    _SCORERS.unregister(name)


def scorer_label(scorer: Scorer) -> str:
    """`scorer 'name' (from <distribution>)`: how a message names a scorer and its package
    (`in-process` when registered here, `not registered` for an object passed directly)."""
    entry = next(
        (e for e in _SCORERS.entries() if e.name == scorer.name and e.plugin is scorer), None
    )
    if entry is None:
        entry = next((e for e in _SCORERS.entries() if e.plugin is not None
                      and type(e.plugin) is type(scorer) and e.name == scorer.name), None)  # fmt: skip
    return f"scorer {scorer.name!r} (from {entry.source if entry else 'not registered'})"


def resolve_scorer(scorer: str | Scorer) -> Scorer:
    """A scorer given by name (looked up) or as an object (checked against the protocol)."""
    return get_scorer(scorer) if isinstance(scorer, str) else _check_protocol(scorer)
