"""Early-bird's options and their choices, in a module that imports no torch: `pai compare`
makes `--earlybird-<option>` flags of them without loading the plugin (this class is declared
in the `pai.options` entry-point group; `scorers.earlybird` says what each one does)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pai.core.errors import PaiError, unknown_name

MODES: tuple[str, ...] = ("magnitude", "bn-channel")
RESTARTS: tuple[str, ...] = ("trained", "init")
DISTANCES: tuple[str, ...] = ("successive", "newest")
WINDOW = 5
EPSILON = 0.1


@dataclass(frozen=True)
class EarlyBirdOptions:
    """Early-bird's options; each is a `pai compare --earlybird-<option>` flag."""

    epsilon: float = field(
        default=EPSILON,
        metadata={
            "help": "stop when the last 4 mask distances (see distance) are all below this",
            "aliases": ("--eb-epsilon",),
        },
    )
    restart: str = field(
        default="trained",
        metadata={
            "help": "ticket weights: those at the stopping point, or the initial ones",
            "choices": RESTARTS,
            "aliases": ("--eb-restart",),
        },
    )
    mode: str = field(
        default="magnitude",
        metadata={"help": "mask criterion", "choices": MODES, "aliases": ("--eb-mode",)},
    )
    max_epochs: int | None = field(
        default=None,
        metadata={
            "help": "stop searching after this many epochs (default: the budget)",
            "aliases": ("--eb-max-epochs",),
        },
    )
    # None is "successive": a default left out of the canonical config, so adding the option
    # changed no stored run's hash.
    distance: str | None = field(
        default=None,
        metadata={
            "help": "the distances compared with epsilon: successive masks' (default), or each "
            "older mask's to the newest, as the reference code does (newest)",
            "choices": DISTANCES,
            "aliases": ("--eb-distance",),
        },
    )

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise unknown_name("early-bird mode", self.mode, MODES)
        if self.restart not in RESTARTS:
            raise unknown_name("early-bird restart", self.restart, RESTARTS)
        if not 0 < self.epsilon <= 1:
            raise PaiError(f"early-bird epsilon must be in (0, 1], got {self.epsilon!r}")
        if self.max_epochs is not None and self.max_epochs < 1:
            raise PaiError(f"early-bird max_epochs must be >= 1, got {self.max_epochs!r}")
        if self.distance not in (None, *DISTANCES):
            raise unknown_name("early-bird distance", self.distance, DISTANCES)
        if self.distance == "successive":  # the default spelled out: the same run, same hash
            object.__setattr__(self, "distance", None)
