"""The supermask search's options, in a module that imports no torch: `pai compare` makes
`--supermask-<option>` flags of them without loading the plugin (this class is declared in the
`pai.options` entry-point group; `scorers.supermask` says what each one does)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pai.core.errors import PaiError, unknown_name
from pai.core.steps import Step

RULES: tuple[str, ...] = ("edge-popup", "bernoulli")


@dataclass(frozen=True)
class SupermaskOptions:
    """The supermask search's options; each is a `pai compare --supermask-<option>` flag."""

    rule: str = field(
        default="edge-popup",
        metadata={
            "help": "edge-popup: top-k |score| per layer (Ramanujan et al. 2020); bernoulli: "
            "sampled masks, straight-through (Zhou et al. 2019)",
            "choices": RULES,
        },
    )
    budget: str | None = field(
        default=None,
        metadata={
            "help": "how long the scores train, e.g. 5ep (default: the comparison's budget)",
            "parse": Step.canonical,
        },
    )
    lr: float | None = field(
        default=None,
        metadata={"help": "the scores' learning rate (default: the comparison's)"},
    )

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise unknown_name("supermask rule", self.rule, RULES)
        if self.budget is not None:
            object.__setattr__(self, "budget", Step.canonical(self.budget))
            if Step.parse(self.budget).count < 1:
                raise PaiError(f"supermask budget must be at least one step, got {self.budget!r}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise PaiError(f"supermask lr must be a finite number > 0, got {self.lr!r}")
