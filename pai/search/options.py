"""The options of pai's own searches, IMP and transfer, in a module that imports no torch: the
command line makes `--imp-<option>` and `--transfer-<option>` flags of their fields without
loading the searches (they are declared in the `pai.options` entry-point group)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pai.core.errors import PaiError
from pai.core.steps import Step
from pai.pruning.criteria import DEFAULT_CRITERION, get_criterion
from pai.report.schema import TRANSFER
from pai.training.config import OPTIMIZERS


@dataclass(frozen=True)
class ImpOptions:
    """IMP's options in an experiment; the targets are the experiment's compressions."""

    rate: float = field(
        default=0.2, metadata={"help": "IMP's pruning rate per level between the targets"}
    )
    rewind: str = field(
        default="0it",
        metadata={"help": "IMP's rewinding step: 0, 500it, 2ep", "aliases": ("--rewind",)},
    )
    criterion: str = field(
        default=DEFAULT_CRITERION,
        metadata={
            "help": "IMP's mask criterion (Zhou et al. 2019): large_final, small_final, "
            "large_init, small_init, large_init_large_final, small_init_small_final, "
            "magnitude_increase, movement, random, or a registered plugin (pai.criteria)"
        },
    )

    def __post_init__(self) -> None:
        if not 0 < self.rate < 1:
            raise PaiError(f"IMP rate must be between 0 and 1 (exclusive), got {self.rate!r}")
        object.__setattr__(self, "rewind", Step.canonical(self.rewind))
        get_criterion(self.criterion)  # PaiError naming the registered criteria


@dataclass(frozen=True)
class TransferOptions:
    """Where the transferred ticket is found; each is a `pai compare --transfer-<option>` flag."""

    method: str = field(
        default="imp", metadata={"help": "the method that finds the ticket on the source"}
    )
    dataset: str | None = field(
        default=None, metadata={"help": "the source dataset (default: the target's)"}
    )
    optimizer: str | None = field(
        default=None,
        metadata={
            "help": "the source training's optimizer (default: the target's)",
            "choices": OPTIMIZERS,
        },
    )
    lr: float | None = field(
        default=None,
        metadata={"help": "the source training's learning rate (default: the target's)"},
    )

    def __post_init__(self) -> None:
        if self.method == TRANSFER:
            raise PaiError("a transferred ticket needs another method to find it, not transfer")
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise PaiError(
                f"unknown optimizer {self.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}"
            )
