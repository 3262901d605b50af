"""Iterative magnitude pruning (IMP): train, prune the smallest weights, reset the rest, repeat.

Frankle & Carbin (2019) find lottery tickets this way: level 0 trains the dense network; each
later level prunes a fraction (20%) of the weights still alive, ranked by the magnitude of their
trained values, resets the survivors and trains again. Three resets are implemented:

- `rewind` (weight rewinding): survivors take their values at step k of the dense run, k = 0
  being the original initialization (Frankle & Carbin 2019) and k > 0 "late resetting"
  (Frankle et al. 2019, "Stabilizing the Lottery Ticket Hypothesis"). By default every level
  then trains for the full budget with the learning-rate schedule started afresh, so that an
  IMP ticket (mask, step-k weights) is trained exactly as the comparison harness trains every
  other ticket. `rewind_schedule="resume"` instead resumes the schedule and the data order at
  step k and trains the remaining T - k steps, as open_lth and Frankle et al. (2020) do.
- `lr-rewind` (learning-rate rewinding, Renda et al. 2020): survivors keep their trained values
  and the learning-rate schedule restarts from its beginning for the full budget (their
  rewinding point t = 0).
- `finetune` (the baseline of Renda et al. 2020): survivors keep their trained values and train
  for the same budget at a constant learning rate equal to the one the schedule used on its
  last step. With a cosine schedule that rate is close to zero, so fine-tuning barely moves
  the weights; use a step schedule to give it a real learning rate.

Counts are fixed in advance by `pruning_plan`, so the number of weights kept at each level is
known exactly; only live weights are ranked, so a pruned weight never comes back. Every level
is stored as its own complete run, and an interrupted IMP resumes after its last complete level.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from pai.core import seeds
from pai.core.atomic import atomic_torch_save, atomic_write_json, atomic_write_text
from pai.core.errors import PaiError, unknown_name
from pai.core.steps import Step
from pai.core.store import FILES, Contents, Run, canonical, config_hash, file_problem
from pai.pruning.criteria import DEFAULT_CRITERION, Criterion, LargeFinal, get_criterion
from pai.pruning.levels import PruningPlan, check_schedule, prune_by_criterion, pruning_plan
from pai.pruning.masks import Masks, prunable_parameters
from pai.search.choices import CONTROLS, RESETS, REWIND_SCHEDULES
from pai.search.ticket import SearchCost, Ticket
from pai.training.checkpoint import DEFAULT_POLICY, CheckpointPolicy
from pai.training.config import TrainConfig
from pai.training.loop import TrainResult, evaluate
from pai.training.record import TRAINED_CONTENTS, TrainingJob, train_jobs
from pai.training.schedule import lr_multiplier

log = logging.getLogger(__name__)

# What a complete level (or control) must hold: the next level starts from its final weights
# and mask, a control from its start weights.
LEVEL_CONTENTS: Contents = {**TRAINED_CONTENTS, FILES.masks: (), FILES.start: ()}


# Trains the model in place under the masks at a level; the loop does everything else.
LevelTrainer = Callable[[int, Masks], None]


def imp_loop(
    model: nn.Module,
    masks: Masks,
    plan: PruningPlan,
    train_level: LevelTrainer,
    *,
    rewind_state: Mapping[str, Tensor] | None,
    first_level: int = 1,
    last_level: int | None = None,
    criterion: Criterion | None = None,
    start_state: Mapping[str, Tensor] | None = None,
    seed: int = 0,
) -> Masks:
    """Run IMP levels `first_level`, ..., `last_level` (default `len(plan) - 1`) on `model`;
    return the last masks.

    `model` holds the trained weights of level `first_level - 1` and `masks` its mask. Each level
    prunes to the plan's counts by `criterion` (default `large_final`, the trained magnitude;
    `prune_by_criterion`), which compares the trained weights with `start_state` (default:
    `rewind_state`) and draws from `seeds.criterion_seed(seed, level)`, resets the
    survivors — to `rewind_state` (a full state_dict: weight rewinding), or keeping the trained
    values when it is None (learning-rate rewinding, fine-tuning) — zeroes the pruned weights
    and calls `train_level(level, masks)`, which trains `model` in place. The training itself
    (loss, optimizer, budget, storage) is the caller's, so classification and regression share
    this one loop.
    """
    criterion = criterion or LargeFinal()
    last = len(plan) - 1 if last_level is None else last_level
    for level in range(first_level, last + 1):
        trained = dict(model.named_parameters())
        start = start_state if start_state is not None else rewind_state
        if start is None and not isinstance(criterion, LargeFinal):
            raise PaiError(
                f"criterion {criterion.name!r} needs the start weights: pass start_state"
            )
        generator = torch.Generator().manual_seed(seeds.criterion_seed(seed, level))
        masks = prune_by_criterion(
            start or trained, trained, masks, plan.groups, plan.kept[level], criterion, generator
        )
        if rewind_state is not None:
            model.load_state_dict(rewind_state)
        masks.apply(model)
        train_level(level, masks)
    return masks


# --- stored IMP runs ------------------------------------------------------------------------


@dataclass(frozen=True)
class ImpConfig:
    """An IMP experiment; every field but `controls` is part of its identity (hash).

    `rewind` is the step survivors are reset to with `reset="rewind"` (a bare whole number
    counts iterations); `rewind_schedule` is what the pruned levels train from there:
    `restart` (None, the default: the whole budget from step 0 of the schedule) or `resume`
    (steps k to T, the schedule and data order resumed at k). `targets` are compressions
    reached exactly (see `pruning_plan`).
    `train_per_class`, when set, trains every level on the fixed class-balanced subset of
    that many training examples per class (`pai.data.loading.training_subset`). `controls` trains,
    at every level > 0, the same mask from a random re-initialization
    (`reinit`) and a random mask with the same layerwise densities from the same start weights
    (`shuffle`); they are separate runs, so adding them later reuses every finished level.
    `criterion` names the mask criterion each level prunes by (`pai.pruning.criteria`; None:
    `large_final`); it compares the trained weights with the rewinding weights, or with the
    initialization when the reset keeps the trained weights.
    """

    model: str
    dataset: str
    train: TrainConfig
    model_seed: int = 0
    levels: int = 20
    rate: float = 0.2
    scope: str = "global"
    rewind: str = "0it"
    reset: str = "rewind"
    output_half_rate: bool = False
    targets: tuple[float, ...] = ()
    controls: tuple[str, ...] = ()
    train_per_class: int | None = None
    rewind_schedule: str | None = None  # None: "restart"; a field added after the others
    criterion: str | None = None  # None: "large_final"; added later still

    def __post_init__(self) -> None:
        if self.train_per_class is not None and self.train_per_class < 1:
            raise PaiError(f"train_per_class must be >= 1, got {self.train_per_class!r}")
        unknown = [c for c in self.controls if c not in CONTROLS]
        if unknown:
            raise unknown_name("control", unknown[0], CONTROLS)
        set_field = object.__setattr__  # normalizing a frozen dataclass's own fields
        set_field(self, "rewind", Step.canonical(self.rewind))
        set_field(self, "targets", tuple(sorted({float(t) for t in self.targets})))
        set_field(self, "controls", tuple(c for c in CONTROLS if c in set(self.controls)))
        if self.reset not in RESETS:
            raise unknown_name("reset", self.reset, RESETS)
        if self.rewind_schedule == "restart":
            set_field(self, "rewind_schedule", None)  # the default, spelled out: same hash
        if self.rewind_schedule not in (None, "resume"):
            raise unknown_name("rewind schedule", self.rewind_schedule, REWIND_SCHEDULES)
        if self.rewind_schedule == "resume" and (
            self.reset != "rewind" or not Step.parse(self.rewind).count
        ):
            raise PaiError(
                "rewind_schedule='resume' needs reset='rewind' and a rewind step after 0; "
                f"got reset={self.reset!r}, rewind={self.rewind!r}"
            )
        if self.reset != "rewind" and Step.parse(self.rewind).count:
            raise PaiError(
                f"rewind {self.rewind!r} applies only to reset='rewind'; "
                f"reset={self.reset!r} keeps the trained weights"
            )
        check_schedule(self.levels, self.rate, self.scope, self.targets, self.output_half_rate)
        if self.criterion == DEFAULT_CRITERION:
            set_field(self, "criterion", None)  # the default, spelled out: same hash
        if self.criterion is not None:
            get_criterion(self.criterion)  # PaiError naming the registered criteria
        if self.levels == 0 and not self.targets:
            raise PaiError(
                "levels 0 with no target compressions prunes nothing (it trains the dense "
                "level 0 only); give levels >= 1 or targets"
            )

    def identity(self) -> dict[str, Any]:
        """The canonical config that names the run directory (controls left out)."""
        return {k: v for k, v in canonical(self).items() if k != "controls"}


@dataclass(frozen=True)
class ControlRun:
    """One control trained at a level: its mask, metrics and run directory."""

    name: str
    masks: Masks
    metrics: dict[str, Any]
    path: Path


@dataclass(frozen=True)
class ImpLevel:
    """One stored IMP level: its mask, what training it measured, and what finding it cost.

    `cost` is the training of every earlier level: what it took to produce this level's mask
    and start weights. `train_config` is what this level trained with (fine-tuning changes the
    learning rate), so a harness can reuse `metrics` when it would train the ticket the same way.
    """

    level: int
    kept: int
    compression: float
    layer_kept: dict[str, int]
    masks: Masks
    metrics: dict[str, Any]
    cost: SearchCost
    train_config: TrainConfig
    path: Path
    controls: dict[str, ControlRun] = field(default_factory=dict)

    def start_state(self, map_location: str | torch.device = "cpu") -> dict[str, Tensor]:
        """The state_dict this level's training started from (pruned weights zero)."""
        return torch.load(self.path / "start.pt", map_location=map_location, weights_only=True)

    def final_state(self, map_location: str | torch.device = "cpu") -> dict[str, Tensor]:
        """The state_dict at the end of this level's training."""
        return torch.load(self.path / "final.pt", map_location=map_location, weights_only=True)


@dataclass(frozen=True)
class ImpResult:
    """A finished IMP run: its directory and every level, dense level 0 first."""

    config: ImpConfig
    path: Path
    levels: list[ImpLevel]

    def ticket(self, level: int) -> Ticket:
        """Level `level` as a ticket: its mask, its start weights and the search cost."""
        found = self.levels[level]
        return Ticket(found.masks, found.start_state(), found.cost)

    def level_for(self, compression: float) -> ImpLevel:
        """The level whose true compression is nearest `compression` (on a log scale)."""
        return min(self.levels, key=lambda lv: abs(math.log(lv.compression / compression)))

    def table(self) -> pd.DataFrame:
        """One row per level: kept weights, true compression, accuracies, cost, controls."""
        rows = []
        for lv in self.levels:
            row: dict[str, Any] = {
                "level": lv.level,
                "kept": lv.kept,
                "density": lv.kept / lv.masks.total,
                "compression": lv.compression,
                "test_accuracy": lv.metrics["test_accuracy"],
                "best_test_accuracy": lv.metrics["best_test_accuracy"],
                "test_loss": lv.metrics["test_loss"],
                "epochs": lv.metrics["epochs"],
                "steps": lv.metrics["steps"],
                "search_epochs": lv.cost.epochs,
                "search_steps": lv.cost.steps,
                "wall_seconds": lv.metrics["wall_seconds"],
                "untrained_test_accuracy": lv.metrics.get("untrained_test_accuracy", math.nan),
            }
            for name in self.config.controls:
                control = lv.controls.get(name)
                for key in ("test_accuracy", "best_test_accuracy", "wall_seconds"):
                    row[f"{name}_{key}"] = control.metrics[key] if control else math.nan
                untrained = control.metrics.get("untrained_test_accuracy") if control else None
                row[f"{name}_untrained_test_accuracy"] = (
                    math.nan if untrained is None else untrained
                )
            rows.append(row)
        return pd.DataFrame(rows)

    def write_csv(self) -> Path:
        """Write `levels.csv` beside the levels."""
        return atomic_write_text(self.path / "levels.csv", self.table().to_csv(index=False))


class _NamedRun(Run):
    """A run directory with a fixed name inside an IMP run (`level-03`, `level-03-reinit`)."""

    def __init__(self, parent: Path, name: str, config: Mapping[str, Any]):
        super().__init__(parent, name, config)
        self.path = parent / name


def _level_name(level: int, control: str | None = None) -> str:
    return f"level-{level:02d}" + (f"-{control}" if control else "")


def _finetune_config(config: TrainConfig, steps_per_epoch: int) -> TrainConfig:
    """`config` at a constant learning rate: the rate its schedule used on its last step."""
    total = Step.parse(config.budget).iterations(steps_per_epoch)
    final_lr = config.lr * lr_multiplier(config, steps_per_epoch, total)(total - 1)
    return config.replace(lr=final_lr, lr_schedule="constant", warmup="0it", milestones=())


def imp_path(config: ImpConfig, out: str | Path) -> Path:
    """Where `run_imp(config, out)` stores its levels: `<out>/imp-<hash>`."""
    return Path(out) / f"imp-{config_hash(config.identity())}"


def imp_data(config: ImpConfig, data, data_root: str | Path | None, device):
    """`data` checked against `config.train_per_class`, or the dataset loaded and cut."""
    from pai.data.loading import load_for_training

    if data is None:
        return load_for_training(
            config.dataset, root=data_root, device=device, train_per_class=config.train_per_class
        )
    if config.train_per_class is not None and (
        len(data.train) != config.train_per_class * data.spec.num_classes
    ):
        raise PaiError(
            f"data has {len(data.train)} training examples, but train_per_class="
            f"{config.train_per_class} needs {config.train_per_class * data.spec.num_classes}; "
            "pass pai.data.loading.training_subset(data, train_per_class)"
        )
    return data


class ImpRun:
    """One IMP experiment in its directory `<out>/imp-<hash>/`: its plan, levels and controls.

    Level L is the complete run `level-LL/` (the files of `pai.training.record`); its controls
    are `level-LL-reinit/` and `level-LL-shuffle/`; `rewind.pt` holds the rewinding weights.
    Each level and control is one task a sweep can schedule (`train_level`, `train_control`):
    it is claimed (`Run.claim`) while it trains, so two processes never train it at once, and it
    checkpoints as it trains (`checkpoint`, None: never), so a killed one resumes.
    """

    def __init__(
        self,
        config: ImpConfig,
        out: str | Path,
        data,
        progress: bool | None = None,
        checkpoint: CheckpointPolicy | None = DEFAULT_POLICY,
    ):
        from pai.models import build_model

        self.config = config
        self.data = data
        self.progress = progress
        self.checkpoint = checkpoint
        self.device = data.train.x.device
        self.model = build_model(config.model, config.dataset, seed=config.model_seed)
        self.model.to(self.device)
        prunable = prunable_parameters(self.model)
        sizes = {name: p.numel() for name, p in prunable.items()}
        self.plan = pruning_plan(
            sizes,
            levels=config.levels,
            rate=config.rate,
            scope=config.scope,
            targets=config.targets,
            output_half_rate=config.output_half_rate,
            shapes={name: tuple(p.shape) for name, p in prunable.items()},
        )
        reachable = len(self.plan) - 1
        if not config.targets and reachable < config.levels:
            raise PaiError(
                f"{config.levels} levels cannot be reached: at rate {config.rate:g} every "
                f"{config.scope} group of {config.model} is down to its last weight after "
                f"level {reachable}; allowed: 1 to {reachable} levels"
            )
        self.level_configs = self._level_configs()
        self.root = imp_path(config, out)
        self.hash = self.root.name.removeprefix("imp-")

    def _level_configs(self) -> list[TrainConfig]:
        """What each level trains with; PaiError for a rewind step outside the budget."""
        config = self.config
        steps_per_epoch = self.data.train.num_batches(config.train.batch_size)
        budget = Step.parse(config.train.budget).iterations(steps_per_epoch)
        last_rewind = budget - 1 if config.rewind_schedule == "resume" else budget
        if Step.parse(config.rewind).iterations(steps_per_epoch) > last_rewind:
            raise PaiError(
                f"rewind step {config.rewind} is beyond the training budget "
                f"{config.train.budget} ({budget} iterations); allowed: 0 to {last_rewind} "
                "iterations"
            )
        pruned = config.train
        if config.reset == "finetune":
            pruned = _finetune_config(config.train, steps_per_epoch)
        return [config.train] + [pruned] * (len(self.plan) - 1)

    def run(self, until: int | None = None) -> ImpResult:
        """Train every level up to `until` (default: the last) that is not complete, in order,
        each followed by its controls; read those levels back into an `ImpResult` (and write
        `levels.csv` once every level is there)."""
        last = len(self.plan) - 1 if until is None else until
        for level in range(last + 1):
            self.train_level(level)
            for control in self.config.controls if level > 0 else ():
                self.train_control(level, control)
        result = _collect(self.config, self.root, self.level_configs[: last + 1])
        if last == len(self.plan) - 1:
            result.write_csv()
        return result

    def level_for(self, compression: float) -> int:
        """The level whose true compression is nearest `compression` (on a log scale), as
        `ImpResult.level_for` picks it, known before any level is trained."""
        gap = [
            abs(math.log(self.plan.compression(lv) / compression)) for lv in range(len(self.plan))
        ]
        return gap.index(min(gap))

    def train_level(self, level: int) -> bool:
        """Train level `level` unless it is complete; whether it trained now.

        Level `level - 1` must be complete. Training a level removes its controls and every
        later level: they were made from this level's earlier result.
        """
        return self._train_claimed(lambda claims: self.level_job(level, claims))

    def _train_claimed(self, job_for: Callable[[ExitStack], TrainingJob | None]) -> bool:
        """Train the job `job_for` makes ready, claimed into an `ExitStack` held while it
        trains; whether it trained (None: it was complete)."""
        with ExitStack() as claims:
            job = job_for(claims)
            if job is None:
                return False
            train_jobs([job], self.data, progress=self.progress, checkpoint=self.checkpoint)
        return True

    def level_job(self, level: int, claims: ExitStack) -> TrainingJob | None:
        """Level `level` made ready to train (None: it is complete): claimed into `claims`,
        the later levels and its controls removed, the model pruned and reset; the job's
        `finish` marks it complete. Level `level - 1` must be complete."""
        if self._level_sound(level):
            return None
        claims.enter_context(self.level_run(level).claim())
        if self._level_sound(level):  # trained by another process while this one waited
            return None
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.root / FILES.config, {"kind": "imp", **self.config.identity()})
        for later in range(level, len(self.plan)):
            for control in (*CONTROLS, *([None] if later > level else [])):
                shutil.rmtree(self.level_run(later, control).path, ignore_errors=True)
        if level == 0:
            self.model.load_state_dict(self._initial_state())
            dense = Masks.dense(self.model)
            return self._job(self.level_run(0), self.model, dense, 0, (self.config.rewind,))
        masks = self._resume(level)
        rewind = self._load(self.root / FILES.rewind) if self.config.reset == "rewind" else None
        jobs: list[TrainingJob] = []
        imp_loop(
            self.model,
            masks,
            self.plan,
            lambda lv, pruned: jobs.append(self._job(self.level_run(lv), self.model, pruned, lv)),
            rewind_state=rewind,
            first_level=level,
            last_level=level,
            criterion=get_criterion(self.config.criterion or DEFAULT_CRITERION),
            start_state=rewind if rewind is not None else self._initial_state(),
            seed=self.config.model_seed,
        )
        return jobs[0]

    def _level_sound(self, level: int) -> bool:
        """Whether level `level` is complete and reads back (`Run.verified`, which moves a
        damaged level aside); level 0 needs `rewind.pt` as well, which only it can remake."""
        run = self.level_run(level)
        if level == 0 and self.config.reset == "rewind" and run.complete:
            problem = file_problem(self.root / FILES.rewind)
            if problem is not None:
                run.quarantine(problem)
                return False
        return run.verified(LEVEL_CONTENTS)

    def level_run(self, level: int, control: str | None = None) -> _NamedRun:
        identity = {
            "imp": self.hash,
            "level": level,
            "role": control or "ticket",
            "group_kept": self.plan.kept[level],
            "train": self.level_configs[level],
        }
        return _NamedRun(self.root, _level_name(level, control), identity)

    def _load(self, path: Path) -> dict[str, Tensor]:
        return torch.load(path, map_location=self.device, weights_only=True)

    def _resume(self, first: int) -> Masks:
        """The model and mask at the end of level `first - 1`, read back from its run."""
        last = self.level_run(first - 1).path
        self.model.load_state_dict(self._load(last / FILES.final))
        return Masks.load(last / FILES.masks, map_location=self.device)

    def _initial_state(self) -> dict[str, Tensor]:
        """The model's initialization (what a criterion compares with when nothing rewinds)."""
        from pai.models import build_model

        net = build_model(self.config.model, self.config.dataset, seed=self.config.model_seed)
        return {k: v.to(self.device) for k, v in net.state_dict().items()}

    def _job(
        self,
        run: Run,
        net: nn.Module,
        masks: Masks,
        level: int,
        snapshot_at: tuple[str, ...] = (),
        control: str | None = None,
    ) -> TrainingJob:
        """`net` (holding its start weights) to train under `masks` into `run`; the metrics
        include the accuracy of the start weights before any training. Its `finish` saves
        level 0's rewinding weights, marks the run complete and logs its accuracy."""
        resume = level > 0 and self.config.rewind_schedule == "resume"
        untrained = evaluate(net, self.data.test)[0]

        def finish(result: TrainResult) -> None:
            if level == 0:
                rewind = result.snapshots[self.config.rewind]
                atomic_torch_save({k: v.cpu() for k, v in rewind.items()}, self.root / FILES.rewind)
            run.finish()
            name = f"level {level}" + (f" {control}" if control else "")
            accuracy = result.metrics["test_accuracy"]
            log.info("%s: kept %d, test accuracy %.4f", name, masks.kept, accuracy)

        return TrainingJob(
            run,
            net,
            self.level_configs[level],
            masks=masks if level > 0 else None,  # level 0 is dense: nothing to enforce
            extra_metrics={
                "level": level,
                "kept": masks.kept,
                "compression": masks.compression,
                "untrained_test_accuracy": untrained,
            },
            snapshot_at=snapshot_at,
            start_at=self.config.rewind if resume else "0it",
            finish=finish,
        )

    def _start_source(self, level: int) -> dict[str, Tensor]:
        """The weights level `level` starts from before masking: rewind or last level's final."""
        if self.config.reset == "rewind":
            return self._load(self.root / FILES.rewind)
        return self._load(self.level_run(level - 1).path / FILES.final)

    def train_control(self, level: int, control: str) -> bool:
        """Train `control` (`pai.search.ablations`) of level `level`, which must be complete,
        unless it is complete; whether it trained now."""
        return self._train_claimed(lambda claims: self.control_job(level, control, claims))

    def control_job(self, level: int, control: str, claims: ExitStack) -> TrainingJob | None:
        """`control` of level `level` (complete) made ready to train, claimed into `claims`
        (None: the control is complete)."""
        from pai.models import build_model
        from pai.search.ablations import ablate

        run = self.level_run(level, control)
        if run.verified(LEVEL_CONTENTS):
            return None
        claims.enter_context(run.claim())
        if run.verified(LEVEL_CONTENTS):  # trained by another process meanwhile
            return None
        path = self.level_run(level).path
        masks = Masks.load(path / FILES.masks, map_location=self.device)
        ticket = Ticket(
            masks, self._load(path / FILES.start), source_state=self._start_source(level)
        )
        net = build_model(self.config.model, self.config.dataset, seed=self.config.model_seed)
        net.to(self.device)
        ablated = ablate(ticket, control, net, seeds.ablation_seed(self.config.model_seed, level))
        net.load_state_dict(ablated.state)
        return self._job(run, net, ablated.masks, level, control=control)


def run_imp(
    config: ImpConfig,
    out: str | Path,
    *,
    data=None,
    data_root: str | Path | None = None,
    device: torch.device | str | None = None,
    progress: bool | None = None,
    checkpoint: CheckpointPolicy | None = DEFAULT_POLICY,
) -> ImpResult:
    """Run (or resume) IMP under `<out>/imp-<hash>/` and return every level (see `ImpRun`).

    A rerun trains the first level that is not complete and every one after it (retraining a
    level removes the levels and controls made from it), resuming a level killed mid-training
    from its checkpoint (`checkpoint`, None: none), and trains only missing controls. `data`
    (a loaded `pai.data.loading.Dataset`, already cut to `config.train_per_class` when that is
    set) is used as given; otherwise the dataset is loaded once onto `device`. `levels.csv`
    holds one row per level.
    """
    data = imp_data(config, data, data_root, device)
    return ImpRun(config, out, data, progress, checkpoint).run()


def read_imp(root: str | Path) -> ImpResult:
    """The IMP run stored in `root` (`<out>/imp-<hash>`), read back without training anything.

    Its config comes from `config.json` (its controls: those trained at level 1), its levels
    are 0, 1, ... up to the first one that is unfinished or damaged (`LEVEL_CONTENTS`), each
    with the training config stored in its run. PaiError when `config.json` does not read
    back as an IMP config.
    """
    root = Path(root)
    problem = file_problem(root / FILES.config, ("kind", "train"))
    stored = json.loads((root / FILES.config).read_text()) if problem is None else {}
    if problem is not None or stored["kind"] != "imp":
        raise PaiError(f"{str(root)!r} is not an IMP run: {problem or 'its kind is not imp'}")
    fields = {k: v for k, v in stored.items() if k not in ("kind", "train")}
    controls = tuple(c for c in CONTROLS if (root / _level_name(1, c)).is_dir())
    try:
        config = ImpConfig(train=_train_config(stored["train"]), controls=controls, **fields)
    except (TypeError, ValueError) as error:  # PaiError included: written by another version
        raise PaiError(f"{str(root)!r} holds an IMP config this pai cannot read: {error}") from None
    level_configs = []
    while True:
        run = Run.at(root / _level_name(len(level_configs)))
        if not run.complete or run.damage(LEVEL_CONTENTS) is not None:
            return _collect(config, root, level_configs)
        level_configs.append(_train_config(run.read_json(FILES.config)["train"]))


def _train_config(stored: Mapping[str, Any]) -> TrainConfig:
    """A `TrainConfig` from its canonical JSON (lists back to tuples)."""
    return TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()})


def _collect(config: ImpConfig, root: Path, level_configs: list[TrainConfig]) -> ImpResult:
    """Read the first `len(level_configs)` stored levels (and their controls) back into an
    `ImpResult`; `level_configs[L]` is what level L trained with."""
    levels = []
    cost = SearchCost()
    for level in range(len(level_configs)):
        path = root / _level_name(level)
        metrics = json.loads((path / FILES.metrics).read_text())
        masks = Masks.load(path / FILES.masks)
        controls = {}
        for control in config.controls:
            control_path = root / _level_name(level, control)
            if (control_path / FILES.marker).is_file():
                controls[control] = ControlRun(
                    control,
                    Masks.load(control_path / FILES.masks),
                    json.loads((control_path / FILES.metrics).read_text()),
                    control_path,
                )
        levels.append(
            ImpLevel(
                level=level,
                kept=masks.kept,  # the plan's count: levels keep exactly it
                compression=masks.compression,
                layer_kept=masks.layer_kept(),
                masks=masks,
                metrics=metrics,
                cost=cost,
                train_config=level_configs[level],
                path=path,
                controls=controls,
            )
        )
        cost = cost + SearchCost(epochs=metrics["epochs"], steps=metrics["steps"])
    return ImpResult(config, root, levels)
