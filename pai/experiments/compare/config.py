"""What a comparison is: its methods, compressions, seeds and variants under one training.

`CompareConfig` is the whole experiment; `RunSpec` one run of it, whose hash names the run's
directory (`pai.core.store`). A method's `SearchRequest` is built from the two.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pai.core.errors import PaiError, refuse_repeats, unknown_name
from pai.pruning.choices import SCOPES
from pai.report.schema import DENSE, check_variant
from pai.training.config import TrainConfig

if TYPE_CHECKING:  # the search protocol imports torch: a config is checked without it
    from pai.search.protocol import SearchRequest


@dataclass(frozen=True)
class CompareConfig:
    """A comparison: which methods, compressions, seeds and variants, under which training.

    `sanity` names the variants of every ticket to train besides it (`pai.report.schema.
    VARIANTS`: the sanity checks, the weight variants of `pai.search.ablations`, noise:SCALE).

    `train.seed` is ignored: seed s trains with the data order of s and initializes the model
    from s (`pai.core.seeds`). `train_per_class` trains (and early-bird and IMP search) on a
    fixed class-balanced subset of that many examples per class (None: the whole training
    split). `per_class` is the per-class size of the scoring batch of data-driven scorers.
    `options` maps a method to its options by field name (`TicketSearch.Options`: IMP's
    `rate` and `rewind`, early-bird's `epsilon`, ...); the rest take their defaults.
    """

    model: str
    dataset: str
    methods: tuple[str, ...]
    compressions: tuple[float, ...]
    train: TrainConfig
    seeds: tuple[int, ...] = (0,)
    sanity: tuple[str, ...] = ()
    scope: str = "global"
    per_class: int = 10
    train_per_class: int | None = None
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from pai.search.methods import method_names

        allowed = method_names()
        if not self.methods:
            raise PaiError("no methods given; choose from: " + ", ".join(allowed))
        for method in self.methods:
            if method not in allowed:
                raise unknown_name("method", method, allowed)
        if not self.compressions:
            raise PaiError("no compressions given; give ratios >= 1 such as 10,100")
        for compression in self.compressions:
            if not math.isfinite(compression) or compression < 1:
                raise PaiError(f"compression must be a finite number >= 1, got {compression!r}")
        if not self.seeds:
            raise PaiError("no seeds given")
        for name in ("methods", "compressions", "seeds", "sanity"):
            refuse_repeats(name, getattr(self, name))
        object.__setattr__(self, "sanity", tuple(check_variant(v) for v in self.sanity))
        if self.scope not in SCOPES:
            from pai.pruning.allocators import resolve_allocator

            resolve_allocator(self.scope)  # PaiError naming the scopes for an unknown one
        if self.per_class < 1:
            raise PaiError(f"per_class must be >= 1, got {self.per_class!r}")
        if self.train_per_class is not None and self.train_per_class < 1:
            raise PaiError(f"train_per_class must be >= 1, got {self.train_per_class!r}")
        unknown = sorted(set(self.options) - set(self.methods))
        if unknown:
            raise PaiError(
                f"options given for {unknown[0]!r}, which is not among the methods: "
                + ", ".join(self.methods)
            )

    def request(self, method_options: Any, compression: float, seed: int) -> SearchRequest:
        """What a method is asked for at `compression` and `seed` (its options resolved)."""
        from pai.search.protocol import SearchRequest

        return SearchRequest(
            model=self.model,
            dataset=self.dataset,
            compression=float(compression),
            seed=seed,
            train=self.train.replace(seed=seed),
            scope=self.scope,
            per_class=self.per_class,
            train_per_class=self.train_per_class,
            compressions=tuple(float(c) for c in self.compressions),
            options=method_options,
        )


@dataclass(frozen=True)
class RunSpec:
    """One run's identity: its run directory is named by the hash of this (see `pai.core.store`).

    `compression` is the one requested (1 for the dense run); `options` holds what else decides
    the ticket (`TicketSearch.identity`: a scorer's rounds, IMP's rate, rewind and targets).
    """

    method: str
    variant: str
    compression: float
    seed: int
    model: str
    dataset: str
    train: TrainConfig
    scope: str | None = None
    per_class: int | None = None
    train_per_class: int | None = None
    options: Mapping[str, Any] | None = None

    @property
    def label(self) -> str:
        if self.method == DENSE:
            return f"dense seed {self.seed}"
        return f"{self.method} {self.variant} x{self.compression:g} seed {self.seed}"
