"""The comparison harness: every method's ticket trained under one budget, one row per run.

For every seed, method, compression and variant the harness finds a ticket (mask, start weights,
search cost), trains it with the same `TrainConfig` (same budget, same data order for a seed),
evaluates it and stores the run in its own directory, keyed by the hash of its full config; a
dense run per seed is the reference. Methods:

- a registered scorer that does not train (random, magnitude, SNIP, GraSP, SynFlow): the zoo
  model is built from the seed and pruned at initialization by `pai.prune`; scorers that need
  data get a seeded class-balanced subset of the training split (`per_class` examples of every
  class, the same for every scorer of a seed). The ticket is the mask and the initial weights.
- a registered scorer that trains (`needs_training`, early-bird): its own `find_ticket`.
- `imp`: iterative magnitude pruning (`pai.search.imp.run_imp`) with every requested compression as
  an exact target; the ticket of a target is its level (mask, rewound weights); the search
  cost is the training of the levels before it. When the ticket would be trained exactly as
  IMP trained that level (same `TrainConfig`), IMP's result is reused instead of training again.

Sanity checks (Frankle et al. 2021, "Pruning Neural Networks at Initialization: Why Are We
Missing the Mark?") add rows whose `variant` names them; plain rows have variant `original`:
`shuffle` permutes the mask within each layer and keeps the start weights, `reinit` keeps the
mask and redraws the weights, `invert` keeps the lowest-scored weights instead of the highest
(scorers that score at initialization only: for a method that trains, keeping the smallest
trained weights is a different search, and those rows are skipped with a note in the log).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from pai.core.atomic import atomic_write_text
from pai.core.errors import PaiError, unknown_name
from pai.pruning.masks import SCOPES, Masks
from pai.core.steps import Step
from pai.core.store import Run, canonical
from pai.search.ticket import SearchCost, Ticket
from pai.training.config import TrainConfig
from pai.training.loop import state_copy, train

if TYPE_CHECKING:
    from pai.search.imp import ImpResult

log = logging.getLogger(__name__)

IMP = "imp"
DENSE = "dense"
ORIGINAL = "original"
SANITY_CHECKS: tuple[str, ...] = ("shuffle", "reinit", "invert")
# The columns every run records, in this order; extra columns follow them.
RUN_COLUMNS: tuple[str, ...] = (
    "method",
    "variant",
    "compression",
    "effective_compression",
    "seed",
    "test_accuracy",
    "best_test_accuracy",
    "collapsed",
    "search_epochs",
    "train_seconds",
)
EXTRA_COLUMNS: tuple[str, ...] = (
    "requested_compression",
    "kept",
    "total",
    "density",
    "collapsed_layers",
    "disconnected",
    "search_steps",
    "scoring_passes",
    "converged",
    "train_epochs",
    "train_steps",
    "test_loss",
    "initial_train_loss",
    "reused_training",
    "options",
    "run_dir",
)
# Sanity checks draw permutations and re-initializations from seeds far from every model seed
# in use, so that a check's random weights are never another run's initialization.
SANITY_SEED_BASE = 1 << 21


def method_names() -> list[str]:
    """Every method `compare` accepts: the registered scorers that loaded, plus `imp`."""
    from pai.pruning.registry import available_scorers

    return [*available_scorers(), IMP]


@dataclass(frozen=True)
class CompareConfig:
    """A comparison: which methods, compressions, seeds and sanity checks, under which training.

    `train.seed` is ignored: seed s trains with `train.replace(seed=s)` and initializes the
    model from s. `train_per_class` trains (and early-bird and IMP search) on a fixed
    class-balanced subset of that many examples per class (None: the whole training split).
    `imp_rate` is IMP's pruning rate between targets and `rewind` its rewinding step.
    `scorer_options` maps a scorer that trains to the keyword options of its `find_ticket`.
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
    imp_rate: float = 0.2
    rewind: str = "0it"
    scorer_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        allowed = method_names()
        for method in self.methods:
            if method not in allowed:
                raise unknown_name("method", method, allowed)
        if not self.methods:
            raise PaiError("no methods given; choose from: " + ", ".join(allowed))
        if not self.compressions:
            raise PaiError("no compressions given; give ratios >= 1 such as 10,100")
        for compression in self.compressions:
            if not math.isfinite(compression) or compression < 1:
                raise PaiError(f"compression must be a finite number >= 1, got {compression!r}")
        if not self.seeds:
            raise PaiError("no seeds given")
        for check in self.sanity:
            if check not in SANITY_CHECKS:
                raise unknown_name("sanity check", check, SANITY_CHECKS)
        if self.scope not in SCOPES:
            raise unknown_name("scope", self.scope, SCOPES)
        if self.per_class < 1:
            raise PaiError(f"per_class must be >= 1, got {self.per_class!r}")
        if self.train_per_class is not None and self.train_per_class < 1:
            raise PaiError(f"train_per_class must be >= 1, got {self.train_per_class!r}")
        if not 0 < self.imp_rate < 1:
            raise PaiError(f"IMP rate must be between 0 and 1 (exclusive), got {self.imp_rate!r}")
        Step.parse(self.rewind)
        unknown = set(self.scorer_options) - set(allowed)
        if unknown:
            raise unknown_name("method with options", sorted(unknown)[0], allowed)


@dataclass(frozen=True)
class RunSpec:
    """One run's identity: its run directory is named by the hash of this (see `pai.core.store`).

    `compression` is the one requested (1 for the dense run); `options` holds what else decides
    the ticket (a scorer's rounds and options, IMP's rate, rewind step and targets).
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


def imp_levels(compressions: Iterable[float], rate: float) -> int:
    """The geometric IMP levels needed to reach the largest compression at `rate`."""
    largest = max(compressions)
    return max(1, math.ceil(math.log(largest) / -math.log1p(-rate) - 1e-9))


def _imp_options(config: CompareConfig) -> dict[str, Any]:
    targets = sorted({float(c) for c in config.compressions})
    return {
        "rate": config.imp_rate,
        "rewind": str(Step.parse(config.rewind)),
        "levels": imp_levels(targets, config.imp_rate),
        "targets": targets,
    }


def plan_runs(config: CompareConfig) -> list[RunSpec]:
    """Every run of the comparison, in the order they are trained: per seed, the dense run, then
    each method at each compression, the original ticket before its sanity checks."""
    from pai.pruning.registry import get_scorer

    specs = []
    skipped = set()
    for seed in config.seeds:
        train_config = config.train.replace(seed=seed)
        common = dict(
            seed=seed,
            model=config.model,
            dataset=config.dataset,
            train=train_config,
            train_per_class=config.train_per_class,
        )
        specs.append(RunSpec(DENSE, ORIGINAL, 1.0, **common))
        for method in config.methods:
            if method == IMP:
                trains, per_class, options = True, None, _imp_options(config)
            else:
                scorer = get_scorer(method)
                trains = bool(getattr(scorer, "needs_training", False))
                if trains and not callable(getattr(scorer, "find_ticket", None)):
                    raise PaiError(
                        f"scorer {method!r} needs training but has no find_ticket(); "
                        "see scorers/README.md"
                    )
                per_class = config.per_class if scorer.needs_data and not trains else None
                if trains:
                    options = dict(config.scorer_options.get(method, {}))
                elif method in config.scorer_options:
                    raise PaiError(
                        f"scorer {method!r} prunes at initialization and takes no options; "
                        "options are for scorers that train"
                    )
                else:
                    options = {"rounds": scorer.default_rounds}
            for compression in config.compressions:
                for variant in (ORIGINAL, *config.sanity):
                    if variant == "invert" and trains:
                        skipped.add(method)
                        continue
                    specs.append(
                        RunSpec(
                            method,
                            variant,
                            float(compression),
                            scope=config.scope,
                            per_class=per_class,
                            options=options,
                            **common,
                        )
                    )
    for method in sorted(skipped):
        log.warning(
            "sanity check 'invert' skipped for %s: it trains to find its mask, and keeping its "
            "smallest trained weights is a different search, not an inversion of a score",
            method,
        )
    return specs


def run_for(spec: RunSpec, store: str | Path) -> Run:
    """The run directory of `spec` in `store`: `<store>/<method>-<variant>-<hash>/`."""
    return Run(store, f"{spec.method}-{spec.variant}", spec)


# --- finding tickets ------------------------------------------------------------------------


# A change of a found mask before its weights are masked (the shuffle sanity check).
MaskTransform = Callable[[Masks], Masks]


@dataclass
class FoundTicket:
    """A ticket and what the harness records about its finding besides the ticket itself.

    `reused` holds a finished training of exactly this ticket (IMP's level): its metrics and
    history, used instead of training again.
    """

    ticket: Ticket
    converged: bool | None = None
    reused: tuple[dict[str, Any], pd.DataFrame] | None = None


def _masked_state(
    model: nn.Module, masks: Masks, state: Mapping[str, Tensor] | None = None
) -> dict:
    """`model`'s weights (or `state` loaded into it) with the pruned ones zeroed, as a copy."""
    if state is not None:
        model.load_state_dict(state)
    masks.apply(model)
    return state_copy(model)


class TicketFinder:
    """Finds the ticket of every run of a comparison, caching what several runs share.

    Scoring batches are drawn once per seed, IMP runs once per seed (all targets at once), and
    an original ticket is kept for its sanity checks.
    """

    def __init__(
        self,
        config: CompareConfig,
        data,
        store: Path,
        *,
        device: torch.device,
        progress: bool | None = None,
    ):
        self.config = config
        self.data = data
        self.store = store
        self.device = device
        self.progress = progress
        self._batches: dict[int, list[tuple[Tensor, Tensor]]] = {}
        self._imp: dict[int, ImpResult] = {}
        self._originals: dict[tuple, FoundTicket] = {}

    def build(self, seed: int) -> nn.Module:
        from pai.models import build_model

        return build_model(self.config.model, self.config.dataset, seed=seed)

    def scoring_batches(self, seed: int) -> list[tuple[Tensor, Tensor]]:
        """The seeded class-balanced scoring subset of the training split, as one batch."""
        from pai.data.loading import scoring_batches

        if seed not in self._batches:
            self._batches[seed] = scoring_batches(self.data.train, self.config.per_class, seed)
        return self._batches[seed]

    def imp_result(self, seed: int) -> ImpResult:
        """IMP for `seed`, with every requested compression as an exact target (run or resumed)."""
        from pai.search.imp import ImpConfig, run_imp

        if seed not in self._imp:
            options = _imp_options(self.config)
            imp_config = ImpConfig(
                model=self.config.model,
                dataset=self.config.dataset,
                train=self.config.train.replace(seed=seed),
                model_seed=seed,
                levels=options["levels"],
                rate=options["rate"],
                scope=self.config.scope,
                rewind=options["rewind"],
                targets=tuple(options["targets"]),
                train_per_class=self.config.train_per_class,
            )
            self._imp[seed] = run_imp(
                imp_config,
                self.store / "imp",
                data=self.data,
                device=self.device,
                progress=self.progress,
            )
        return self._imp[seed]

    def dense(self, spec: RunSpec) -> FoundTicket:
        """The dense reference: the initial weights, no mask; IMP's level 0 when IMP ran it."""
        model = self.build(spec.seed)
        ticket = Ticket(Masks.dense(model), model.state_dict())
        if IMP in self.config.methods:
            level = self.imp_result(spec.seed).levels[0]
            if level.train_config == spec.train:
                return FoundTicket(ticket, reused=_stored_training(level.metrics, level.path))
        return FoundTicket(ticket)

    def find(self, spec: RunSpec) -> FoundTicket:
        """The ticket of `spec`: its method's original ticket, transformed by its variant."""
        from pai.pruning.sanity import reinitialize, shuffle_within_layers

        if spec.method == DENSE:
            return self.dense(spec)
        sanity_seed = SANITY_SEED_BASE + spec.seed
        if spec.variant in (ORIGINAL, "reinit"):
            original = self.original(spec)
            if spec.variant == ORIGINAL:
                return original
            model = self.build(spec.seed)
            model.load_state_dict(original.ticket.state)
            fresh = reinitialize(model, original.ticket.masks, sanity_seed)
            state = state_copy(fresh)
            return FoundTicket(Ticket(original.ticket.masks, state, original.ticket.cost))
        if spec.variant == "shuffle":
            generator = torch.Generator().manual_seed(sanity_seed)

            def shuffle(masks: Masks) -> Masks:
                return shuffle_within_layers(masks, generator)

            if spec.method == IMP:
                return self.imp_ticket(spec, shuffle)
            return self.scorer_ticket(spec, transform=shuffle)
        return self.scorer_ticket(spec, invert=True)

    def original(self, spec: RunSpec) -> FoundTicket:
        key = (spec.method, spec.compression, spec.seed)
        if key not in self._originals:
            if spec.method == IMP:
                self._originals[key] = self.imp_ticket(spec)
            else:
                self._originals[key] = self.scorer_ticket(spec)
        return self._originals[key]

    def scorer_ticket(
        self, spec: RunSpec, *, invert: bool = False, transform: MaskTransform | None = None
    ) -> FoundTicket:
        """A scorer's ticket: pruned at initialization, or found by the scorer's own training."""
        from pai.pruning.driver import prune
        from pai.pruning.registry import get_scorer
        from pai.pruning.sanity import inverted

        scorer = get_scorer(spec.method)
        model = self.build(spec.seed)
        options = dict(spec.options or {})
        if getattr(scorer, "needs_training", False):
            ticket = scorer.find_ticket(
                model,
                self.data,
                spec.compression,
                train_config=spec.train,
                scope=spec.scope,
                device=self.device,
                progress=self.progress,
                transform=transform,
                **options,
            )
            converged = getattr(ticket, "converged", None)
            return FoundTicket(ticket, converged=None if converged is None else bool(converged))
        rounds = options.pop("rounds")
        masks = prune(
            model,
            inverted(scorer) if invert else scorer,
            spec.compression,
            data=self.scoring_batches(spec.seed) if scorer.needs_data else None,
            rounds=rounds,
            scope=spec.scope,
            seed=spec.seed,
            device=self.device,
        ).to("cpu")
        if transform is not None:
            masks = transform(masks)
        state = _masked_state(model, masks)
        return FoundTicket(Ticket(masks, state, SearchCost(scoring_passes=rounds)))

    def imp_ticket(self, spec: RunSpec, transform: MaskTransform | None = None) -> FoundTicket:
        """IMP's level for the requested compression; its training is reused when identical."""
        result = self.imp_result(spec.seed)
        level = result.level_for(spec.compression)
        if transform is None:
            ticket = result.ticket(level.level)
            reused = None
            if level.train_config == spec.train:
                reused = _stored_training(level.metrics, level.path)
            return FoundTicket(ticket, reused=reused)
        masks = transform(level.masks)
        rewind = torch.load(result.path / "rewind.pt", map_location="cpu", weights_only=True)
        state = _masked_state(self.build(spec.seed), masks, rewind)
        return FoundTicket(Ticket(masks, state, level.cost))


def _stored_training(metrics: Mapping[str, Any], path: Path) -> tuple[dict, pd.DataFrame]:
    history = pd.read_csv(path / "history.csv")
    return dict(metrics), history


def find_ticket(
    method: str,
    model: str,
    dataset: str,
    compression: float,
    *,
    data,
    train: TrainConfig,
    seed: int = 0,
    variant: str = ORIGINAL,
    scope: str = "global",
    per_class: int = 10,
    imp_rate: float = 0.2,
    rewind: str = "0it",
    imp_targets: Iterable[float] = (),
    options: Mapping[str, Any] | None = None,
    store: str | Path = "runs",
    device: torch.device | str | None = None,
) -> Ticket:
    """The ticket `method` finds for a zoo model at `compression`, as the harness finds it.

    `data` is a loaded `pai.data.loading.Dataset`; `train` is used by methods that train (early-bird,
    IMP, whose levels are stored under `store`); `options` are a training scorer's
    `find_ticket` options. `variant` is `original` or a sanity check. IMP reaches `compression`
    and every compression in `imp_targets` exactly (as `compare` does with all of its
    compressions, so passing them finds the IMP run `compare` stored).
    """
    from pai.core.devices import resolve_device

    config = CompareConfig(
        model,
        dataset,
        (method,),
        tuple(dict.fromkeys([float(compression), *map(float, imp_targets)])),
        train,
        seeds=(seed,),
        sanity=() if variant == ORIGINAL else (variant,),
        scope=scope,
        per_class=per_class,
        imp_rate=imp_rate,
        rewind=rewind,
        scorer_options={method: dict(options)} if options else {},
    )
    specs = [
        s
        for s in plan_runs(config)
        if s.method == method and s.variant == variant and s.compression == float(compression)
    ]
    if not specs:
        raise PaiError(f"sanity check {variant!r} does not apply to {method!r}, which trains")
    spec = specs[0]
    device = resolve_device(device) if device is not None else data.train.x.device
    return TicketFinder(config, data, Path(store), device=device).find(spec).ticket


# --- training and recording ----------------------------------------------------------------


def collapse_facts(model: nn.Module, masks: Masks) -> dict[str, Any]:
    """Effective compression and whether the masked network collapsed.

    Collapsed: some prunable layer kept no weight (`layer_collapse`) or no input-output path is
    left (`effective_masks` keeps nothing); either way the network computes a constant.
    """
    from pai.pruning.collapse import effective_masks, layer_collapse

    empty = layer_collapse(masks)
    effective = effective_masks(model, masks.to(next(model.parameters()).device))
    disconnected = effective.kept == 0
    return {
        "effective_compression": effective.compression,
        "collapsed": bool(empty) or disconnected,
        "collapsed_layers": ";".join(empty),
        "disconnected": disconnected,
    }


def train_ticket(
    spec: RunSpec,
    found: FoundTicket,
    finder: TicketFinder,
    run: Run,
) -> dict[str, Any]:
    """Train `found`'s ticket (or reuse its stored training), store the run, return its row."""
    ticket = found.ticket
    masks = ticket.masks.to("cpu")
    model = finder.build(spec.seed)
    facts = collapse_facts(model, masks)
    run.start()
    masks.save(run.path / "masks.pt")
    if found.reused is not None:
        metrics, history = found.reused
        run.write_text("history.csv", history.to_csv(index=False))
    else:
        model.load_state_dict(ticket.state)
        dense = spec.method == DENSE
        result = train(
            model,
            finder.data,
            spec.train,
            masks=None if dense else masks,
            device=finder.device,
            progress=finder.progress,
        )
        metrics = result.metrics
        run.write_csv("history.csv", result.history)
    row = {
        "method": spec.method,
        "variant": spec.variant,
        "compression": masks.compression,
        "effective_compression": facts["effective_compression"],
        "seed": spec.seed,
        "test_accuracy": metrics["test_accuracy"],
        "best_test_accuracy": metrics["best_test_accuracy"],
        "collapsed": facts["collapsed"],
        "search_epochs": ticket.cost.epochs,
        "train_seconds": metrics["wall_seconds"],
        "requested_compression": spec.compression,
        "kept": masks.kept,
        "total": masks.total,
        "density": masks.density,
        "collapsed_layers": facts["collapsed_layers"],
        "disconnected": facts["disconnected"],
        "search_steps": ticket.cost.steps,
        "scoring_passes": ticket.cost.scoring_passes,
        "converged": found.converged,
        "train_epochs": metrics["epochs"],
        "train_steps": metrics["steps"],
        "test_loss": metrics["test_loss"],
        "initial_train_loss": metrics.get("initial_train_loss", math.nan),
        "reused_training": found.reused is not None,
        "options": json.dumps(canonical(spec.options or {}), sort_keys=True),
        "run_dir": run.path.name,
    }
    run.write_json("row.json", row)
    run.finish()
    return row


def runs_table(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The tidy table: one row per run, the required columns first."""
    frame = pd.DataFrame(list(rows), columns=[*RUN_COLUMNS, *EXTRA_COLUMNS])
    return frame


def collect_rows(specs: Iterable[RunSpec], store: Path) -> list[dict[str, Any]]:
    """The rows of the complete runs among `specs`, in plan order."""
    rows = []
    for spec in specs:
        run = run_for(spec, store)
        if run.complete:
            rows.append(run.read_json("row.json"))
    return rows


def write_runs_csv(specs: Iterable[RunSpec], store: Path, out: Path) -> pd.DataFrame:
    """(Re)build `out/runs.csv` atomically from the complete run directories."""
    table = runs_table(collect_rows(specs, store))
    atomic_write_text(out / "runs.csv", table.to_csv(index=False))
    return table


def load_data(config: CompareConfig, data_root: str | Path | None, device: torch.device):
    """The dataset on `device`; with `train_per_class`, its training split is the fixed subset."""
    from pai.data.loading import load_dataset, training_subset

    data = load_dataset(config.dataset, root=data_root, device=device)
    if config.train_per_class is None:
        return data
    return training_subset(data, config.train_per_class)


def _row_line(index: int, count: int, spec: RunSpec, row: Mapping[str, Any]) -> str:
    collapsed = ", collapsed" if row["collapsed"] else ""
    reused = ", IMP's training reused" if row["reused_training"] else ""
    return (
        f"[{index}/{count}] {spec.label}: compression {row['compression']:.4g}, test accuracy "
        f"{row['test_accuracy']:.4f}{collapsed}{reused} ({row['train_seconds']:.1f} s)"
    )


def train_runs(
    config: CompareConfig,
    pending: list[RunSpec],
    store: Path,
    *,
    data_root: str | Path | None,
    device: torch.device | str | None,
    progress: bool | None,
    after_each: Callable[[], object] | None = None,
) -> None:
    """Find and train the tickets of `pending` in order, in this process, into `store`.

    `after_each()` runs after every finished run (the caller rebuilds its tables there).
    """
    from pai.core.devices import resolve_device

    show = sys.stderr.isatty() if progress is None else progress
    device = resolve_device(device)
    data = load_data(config, data_root, device)
    finder = TicketFinder(config, data, store, device=device, progress=progress)
    bar = tqdm(total=len(pending), unit="run", disable=not show, dynamic_ncols=True)
    with bar:
        for index, spec in enumerate(pending, start=1):
            bar.set_description(spec.label)
            started = time.perf_counter()
            row = train_ticket(spec, finder.find(spec), finder, run_for(spec, store))
            if after_each is not None:
                after_each()
            log.info("%s done in %.1f s", spec.label, time.perf_counter() - started)
            tqdm.write(_row_line(index, len(pending), spec, row), file=sys.stderr)
            bar.update(1)


def _train_in_worker(
    config: CompareConfig,
    pending: list[RunSpec],
    store: Path,
    data_root: str | Path | None,
    device: str | None,
    threads: int,
) -> None:
    """One worker process of `run_comparison(jobs > 1)`: one seed's runs, `threads` threads."""
    torch.set_num_threads(threads)
    train_runs(config, pending, store, data_root=data_root, device=device, progress=False)


def _check_parallel(config: CompareConfig, jobs: int) -> None:
    from pai.pruning.registry import IN_PROCESS, scorer_entries

    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise PaiError(f"jobs must be a whole number >= 1, got {jobs!r}")
    if jobs == 1:
        return
    sources = {entry.name: entry.source for entry in scorer_entries()}
    for method in config.methods:
        if sources.get(method) == IN_PROCESS:
            raise PaiError(
                f"scorer {method!r} is registered in this process only, and jobs={jobs} trains "
                "in new processes that see installed plugins only; use jobs=1"
            )


def run_comparison(
    config: CompareConfig,
    out: str | Path,
    *,
    store: str | Path | None = None,
    data_root: str | Path | None = None,
    device: torch.device | str | None = None,
    progress: bool | None = None,
    jobs: int = 1,
) -> pd.DataFrame:
    """Run every run of `config` not yet complete; write the tables and the figure into `out`.

    Runs are stored in `store` (default `out/runs`), one directory per run; a finished run is
    never trained again, and `out/runs.csv` is rebuilt from the complete runs after every run,
    so an interruption loses only the run in progress. At the end `out/summary.csv`,
    `out/summary.md` and `out/accuracy_vs_compression.png` are written. Returns the runs table.
    A progress line per run goes to stderr.

    `jobs` > 1 trains the seeds in parallel worker processes (joblib), each seed's runs in
    order in one worker with cpu_count / jobs torch threads; runs.csv is then rebuilt when they
    end. Meant for many-core CPUs: CPU results depend on the thread count, so a run trained
    with other `jobs` may differ in its last digits.
    """
    from pai.report.plots import plot_accuracy_vs_compression
    from pai.report.tables import write_summary

    out = Path(out)
    store = Path(store) if store is not None else out / "runs"
    _check_parallel(config, jobs)
    out.mkdir(parents=True, exist_ok=True)
    specs = plan_runs(config)
    pending = [spec for spec in specs if not run_for(spec, store).complete]
    print(f"{len(specs)} runs, {len(specs) - len(pending)} already complete", file=sys.stderr)
    try:
        if pending and jobs == 1:
            train_runs(
                config,
                pending,
                store,
                data_root=data_root,
                device=device,
                progress=progress,
                after_each=lambda: write_runs_csv(specs, store, out),
            )
        elif pending:
            from joblib import Parallel, delayed

            by_seed: dict[int, list[RunSpec]] = {}
            for spec in pending:
                by_seed.setdefault(spec.seed, []).append(spec)
            workers = min(jobs, len(by_seed))
            threads = max(1, (os.cpu_count() or 1) // workers)
            device_name = None if device is None else str(device)
            Parallel(n_jobs=workers, backend="loky")(
                delayed(_train_in_worker)(config, runs, store, data_root, device_name, threads)
                for runs in by_seed.values()
            )
    finally:
        table = write_runs_csv(specs, store, out)
    if not table.empty:
        write_summary(table, out)
        title = f"{config.model} on {config.dataset}, {config.train.budget} per ticket"
        plot_accuracy_vs_compression(table, out / "accuracy_vs_compression.png", title=title)
    return table
