"""What the layer-collapse experiment (`pai.experiments.collapse`) measures, in a module that
imports no torch: `pai collapse` makes flags of `CollapseConfig`'s fields and checks them
before loading the experiment."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pai.core.errors import PaiError, refuse_repeats, unknown_name
from pai.core.plugins import SCORERS, declared_names
from pai.data.specs import DATASETS, dataset_spec
from pai.pruning.choices import COLLAPSE_CRITERIA as CRITERIA

DEFAULT_SCORERS: tuple[str, ...] = ("random", "magnitude", "snip", "grasp", "synflow")
SEARCHES: tuple[str, ...] = ("scan", "bisection")  # "exact" is chosen by itself where it holds


@dataclass(frozen=True)
class CollapseConfig:
    """What the experiment measures: scorers, seeds 0..seeds-1, and how each is pruned.

    `scope`, `rounds` (None: each scorer's own), `schedule` and `per_class` are those of
    `pai.pruning.driver.prune`; `batch_size` splits the scoring batch; `data_from` takes the
    scoring batch from another dataset (`pai.data.fitting.fit_to_input_shape`).
    """

    model: str
    dataset: str
    scorers: tuple[str, ...] = field(
        default=DEFAULT_SCORERS, metadata={"help": "comma-separated scorer names"}
    )
    seeds: int = field(default=3, metadata={"help": "seeds 0..N-1 (model, data and scorer)"})
    compressions: tuple[float, ...] = field(
        default=(),
        metadata={"help": "also tabulate collapse and effective compression at these, "
                  "e.g. 10,100,1000"},
    )  # fmt: skip
    density_at: float = field(
        default=100.0,
        metadata={"help": "compression of the per-layer density figure (first seed's masks)"},
    )
    resolution: float = field(
        default=0.05,
        metadata={"help": "search resolution in decades of compression for iterative scorers"},
    )
    criterion: str = field(
        default="layer",
        metadata={"choices": CRITERIA, "help": "layer: no prunable layer empty (Tanaka et al.); "
                  "path: input still reaches output"},
    )  # fmt: skip
    search: str | None = field(
        default=None,
        metadata={"choices": SEARCHES,
                  "help": "search for iterative scorers (default scan: no monotonicity assumed)"},
    )  # fmt: skip
    batch_size: int = field(default=256, metadata={"help": "scoring batch size"})
    data_from: str | None = field(
        default=None,
        metadata={
            "choices": tuple(DATASETS),
            "help": "take the scoring batch from this dataset (with at most as many classes) "
            "instead, e.g. when the model's dataset is absent: images are padded with black to "
            "the model's size and a single channel is repeated",
        },
    )
    scope: str = "global"
    rounds: int | None = None
    schedule: str = "exponential"
    per_class: int = 10

    def __post_init__(self) -> None:
        if not self.scorers:
            raise PaiError("no scorer given; name at least one, e.g. random,magnitude")
        refuse_repeats("scorers", self.scorers)
        scorers = declared_names(SCORERS)  # a declared scorer that fails to load says so later
        for scorer in self.scorers:
            if scorer not in scorers:
                raise unknown_name("scorer", scorer, scorers)
        refuse_repeats("compressions", self.compressions)
        for name in ("seeds", "batch_size", "per_class"):
            if getattr(self, name) < 1:
                raise PaiError(f"{name} must be a whole number >= 1, got {getattr(self, name)!r}")
        for value in (*self.compressions, self.density_at):
            if not math.isfinite(value) or value < 1:
                raise PaiError(f"compression {value!r} must be a finite number >= 1")
        if not math.isfinite(self.resolution) or self.resolution <= 0:
            raise PaiError(f"resolution {self.resolution!r} must be a positive number")
        if self.criterion not in CRITERIA:
            raise unknown_name("criterion", self.criterion, CRITERIA)
        if self.search is not None and self.search not in SEARCHES:
            raise unknown_name("search", self.search, SEARCHES)
        if self.data_from is not None:
            dataset_spec(self.data_from)
