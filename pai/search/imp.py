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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from pai.core.atomic import atomic_torch_save, atomic_write_json, atomic_write_text
from pai.core.errors import PaiError, unknown_name
from pai.pruning.masks import SCOPES, Masks, keep_topk, kept_count, prunable_parameters
from pai.core.steps import Step
from pai.core.store import MARKER, Run, canonical, config_hash
from pai.search.ticket import SearchCost, Ticket
from pai.training.config import TrainConfig
from pai.training.loop import TrainResult, state_copy, train
from pai.training.schedule import lr_multiplier

log = logging.getLogger(__name__)

RESETS: tuple[str, ...] = ("rewind", "lr-rewind", "finetune")
REWIND_SCHEDULES: tuple[str, ...] = ("restart", "resume")
CONTROLS: tuple[str, ...] = ("reinit", "shuffle")
# Controls draw from seeds far from every model seed in use, so that a control's random
# initialization or permutation is never another run's initialization.
CONTROL_SEED_BASE = 1 << 20


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def _check_schedule(
    levels: int, rate: float, scope: str, targets: Sequence[float], output_half_rate: bool
) -> None:
    """PaiError naming the first schedule setting that is not allowed."""
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 0:
        raise PaiError(f"levels must be a whole number >= 0, got {levels!r}")
    if not 0 < rate < 1:
        raise PaiError(f"pruning rate must be between 0 and 1 (exclusive), got {rate!r}")
    if scope not in SCOPES:
        raise unknown_name("scope", scope, SCOPES)
    for target in targets:
        if not math.isfinite(target) or target < 1:
            raise PaiError(f"target compression must be a finite number >= 1, got {target!r}")
    if targets and output_half_rate:
        raise PaiError(
            "exact target compressions cannot be combined with a half-rate output layer: the "
            "overall compression then depends on the layer sizes; drop one of the two"
        )


# --- the schedule ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PruningPlan:
    """How many weights each group keeps at each level; level 0 is the dense network.

    A group is a tuple of parameter names ranked together: all prunable weights for global
    pruning, one layer each for layerwise pruning, and the output layer on its own when it is
    pruned at half rate.
    """

    sizes: dict[str, int]
    groups: tuple[tuple[str, ...], ...]
    kept: tuple[tuple[int, ...], ...]  # kept[level][group]

    def __len__(self) -> int:
        return len(self.kept)

    @property
    def total(self) -> int:
        return sum(self.sizes.values())

    def level_kept(self, level: int) -> int:
        """Weights kept in total at `level`."""
        return sum(self.kept[level])

    def compression(self, level: int) -> float:
        """The true compression (prunable / kept weights) at `level`."""
        return self.total / self.level_kept(level)


def pruning_plan(
    sizes: Mapping[str, int],
    *,
    levels: int,
    rate: float = 0.2,
    scope: str = "global",
    targets: Sequence[float] = (),
    output_half_rate: bool = False,
    min_kept: int = 1,
) -> PruningPlan:
    """The kept count of every group at every level, for prunable tensors of the given sizes.

    A group of n weights pruned at rate r keeps floor(n * (1 - r)^L + 1/2) weights at level
    L = 1..`levels` (round half up, computed in float64), at least min(`min_kept`, n). Global
    scope ranks all tensors as one group; layerwise scope ranks each tensor alone. With
    `output_half_rate` (Frankle & Carbin 2019) the output layer, the last tensor of `sizes`,
    is its own group pruned at rate r / 2; the others keep their scope.

    Each target compression c adds a level where every group keeps exactly `kept_count(n, c)`,
    placed by density among the others (density (1 - r)^L against 1 / c), so the step before
    it prunes to the exact target. Given targets, levels below the largest one are dropped; a
    target beyond the last geometric level is reached in one step from it. A level never keeps
    more than the one before (a pruned weight cannot return), and a level keeping what the one
    before kept is dropped, which happens only in tiny networks or at `min_kept`.
    """
    names = list(sizes)
    if not names or any(size < 1 for size in sizes.values()):
        raise PaiError(f"a pruning plan needs tensors with at least one weight, got {dict(sizes)}")
    _check_schedule(levels, rate, scope, targets, output_half_rate)
    output = names[-1] if output_half_rate else None
    body = [n for n in names if n != output]
    group_rates: list[tuple[tuple[str, ...], float]] = []
    if scope == "global":
        group_rates += [(tuple(body), rate)] if body else []
    else:
        group_rates += [((n,), rate) for n in body]
    if output is not None:
        group_rates.append(((output,), rate / 2))
    groups = tuple(g for g, _ in group_rates)
    group_sizes = [sum(sizes[n] for n in g) for g in groups]

    # (density under the base rate, order at ties, counts per group)
    points: list[tuple[float, int, tuple[int, ...]]] = []
    for level in range(1, levels + 1):
        counts = tuple(
            max(min(min_kept, n), 1, _round_half_up(n * (1 - r) ** level))
            for n, (_, r) in zip(group_sizes, group_rates, strict=True)
        )
        points.append(((1 - rate) ** level, 0, counts))
    for target in sorted(set(targets)):
        counts = tuple(kept_count(n, target) for n in group_sizes)
        points.append((1 / target, 1, counts))
    points.sort(key=lambda point: (-point[0], point[1]))
    if targets:
        points = [p for p in points if p[0] >= 1 / max(targets)]

    kept = [tuple(group_sizes)]
    for _, _, counts in points:
        counts = tuple(min(c, before) for c, before in zip(counts, kept[-1], strict=True))
        if counts != kept[-1]:
            kept.append(counts)
    return PruningPlan(dict(sizes), groups, tuple(kept))


def imp_schedule(
    total: int, levels: int, rate: float = 0.2, targets: Sequence[float] = ()
) -> list[int]:
    """Weights kept after each level 1, 2, ... of global IMP on `total` weights.

    Level L keeps floor(total * (1 - rate)^L + 1/2) (round half up, at least 1); each target
    compression c adds a level keeping exactly `kept_count(total, c)`. The full rule, including
    ordering, dropped repeats and where the schedule stops with targets, is `pruning_plan`'s.
    """
    plan = pruning_plan({"weights": total}, levels=levels, rate=rate, targets=targets)
    return [counts[0] for counts in plan.kept[1:]]


# --- the prune-reset loop -------------------------------------------------------------------


@torch.no_grad()
def prune_by_magnitude(
    model: nn.Module, masks: Masks, groups: Sequence[Sequence[str]], counts: Sequence[int]
) -> Masks:
    """Keep exactly `counts[i]` weights of `groups[i]`: the live ones of largest magnitude.

    Only weights alive in `masks` are ranked, so a pruned weight never comes back; ties break
    by position (`keep_topk`). The model is not changed.
    """
    params = dict(model.named_parameters())
    kept: dict[str, Tensor] = {}
    for group, count in zip(groups, counts, strict=True):
        scores = {name: params[name].detach().abs() for name in group}
        size = sum(score.numel() for score in scores.values())
        # kept_count(size, size / count) == count exactly: the quotient is within float
        # rounding of `count`, far from the half-way points kept_count rounds at.
        group_masks = keep_topk(scores, size / count, "global", live={n: masks[n] for n in group})
        kept.update(group_masks)
    return Masks({name: kept[name] for name in masks})


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
) -> Masks:
    """Run IMP levels `first_level`, ..., `len(plan) - 1` on `model`; return the last masks.

    `model` holds the trained weights of level `first_level - 1` and `masks` its mask. Each level
    prunes to the plan's counts by trained magnitude (`prune_by_magnitude`), resets the
    survivors — to `rewind_state` (a full state_dict: weight rewinding), or keeping the trained
    values when it is None (learning-rate rewinding, fine-tuning) — zeroes the pruned weights
    and calls `train_level(level, masks)`, which trains `model` in place. The training itself
    (loss, optimizer, budget, storage) is the caller's, so classification and regression share
    this one loop.
    """
    for level in range(first_level, len(plan)):
        masks = prune_by_magnitude(model, masks, plan.groups, plan.kept[level])
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
        _check_schedule(self.levels, self.rate, self.scope, self.targets, self.output_half_rate)

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
            }
            for name in self.config.controls:
                control = lv.controls.get(name)
                for key in ("test_accuracy", "best_test_accuracy", "wall_seconds"):
                    row[f"{name}_{key}"] = control.metrics[key] if control else math.nan
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


def run_imp(
    config: ImpConfig,
    out: str | Path,
    *,
    data=None,
    data_root: str | Path | None = None,
    device: torch.device | str | None = None,
    progress: bool | None = None,
) -> ImpResult:
    """Run (or resume) IMP under `<out>/imp-<hash>/` and return every level.

    Level 0 trains the dense network from its seeded initialization and saves the rewind
    weights (`rewind.pt`, step `config.rewind`); each later level prunes, resets and trains as
    `imp_loop` does. Level L is the complete run `level-LL/` (config.json, masks.pt, start.pt,
    final.pt, metrics.json, history.csv, COMPLETE last); its controls are `level-LL-reinit/`
    and `level-LL-shuffle/`. A rerun starts after the last complete level (retraining the ones
    after it and their controls) and trains only missing controls. `data` (a loaded
    `pai.data.loading.Dataset`, already cut to `config.train_per_class` when that is set) is used as
    given; otherwise the dataset is loaded once onto `device`.
    `levels.csv` holds one row per level.
    """
    from pai.data.loading import load_dataset, training_subset
    from pai.models import build_model
    from pai.pruning.sanity import reinitialize, shuffle_within_layers

    if data is None:
        data = load_dataset(config.dataset, root=data_root, device=device)
        if config.train_per_class is not None:
            data = training_subset(data, config.train_per_class)
    elif config.train_per_class is not None and (
        len(data.train) != config.train_per_class * data.spec.num_classes
    ):
        raise PaiError(
            f"data has {len(data.train)} training examples, but train_per_class="
            f"{config.train_per_class} needs {config.train_per_class * data.spec.num_classes}; "
            "pass pai.data.loading.training_subset(data, train_per_class)"
        )
    device = data.train.x.device
    model = build_model(config.model, config.dataset, seed=config.model_seed).to(device)
    sizes = {name: p.numel() for name, p in prunable_parameters(model).items()}
    plan = pruning_plan(
        sizes,
        levels=config.levels,
        rate=config.rate,
        scope=config.scope,
        targets=config.targets,
        output_half_rate=config.output_half_rate,
    )
    steps_per_epoch = data.train.num_batches(config.train.batch_size)
    budget = Step.parse(config.train.budget).iterations(steps_per_epoch)
    last_rewind = budget - 1 if config.rewind_schedule == "resume" else budget
    if Step.parse(config.rewind).iterations(steps_per_epoch) > last_rewind:
        raise PaiError(
            f"rewind step {config.rewind} is beyond the training budget {config.train.budget} "
            f"({budget} iterations); allowed: 0 to {last_rewind} iterations"
        )
    pruned_config = config.train
    if config.reset == "finetune":
        pruned_config = _finetune_config(config.train, steps_per_epoch)
    level_configs = [config.train] + [pruned_config] * (len(plan) - 1)

    root = imp_path(config, out)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(root / "config.json", {"kind": "imp", **config.identity()})
    imp_hash = root.name.removeprefix("imp-")

    def level_run(level: int, control: str | None = None) -> _NamedRun:
        identity = {
            "imp": imp_hash,
            "level": level,
            "role": control or "ticket",
            "group_kept": plan.kept[level],
            "train": level_configs[level],
        }
        return _NamedRun(root, _level_name(level, control), identity)

    def load(path: Path) -> dict[str, Tensor]:
        return torch.load(path, map_location=device, weights_only=True)

    def train_and_store(
        run: _NamedRun, net: nn.Module, masks: Masks, level: int, snapshot_at: tuple[str, ...] = ()
    ) -> TrainResult:
        """Train `net` from its current weights under `masks` into `run` (not finished yet)."""
        run.start()
        masks.save(run.path / "masks.pt")
        run.save_tensors("start.pt", state_copy(net, "cpu"))
        result = train(
            net,
            data,
            level_configs[level],
            masks=masks if level > 0 else None,  # level 0 is dense: nothing to enforce
            snapshot_at=snapshot_at,
            progress=progress,
            start_at=config.rewind if level > 0 and config.rewind_schedule == "resume" else "0it",
        )
        run.save_tensors("final.pt", state_copy(net, "cpu"))
        run.write_csv("history.csv", result.history)
        summary = {"level": level, "kept": masks.kept, "compression": masks.compression}
        run.write_json("metrics.json", {**result.metrics, **summary})
        return result

    def start_source(level: int) -> dict[str, Tensor]:
        """The weights level `level` starts from before masking: rewind or last level's final."""
        if config.reset == "rewind":
            return load(root / "rewind.pt")
        return load(level_run(level - 1).path / "final.pt")

    def train_controls(level: int) -> None:
        masks = Masks.load(level_run(level).path / "masks.pt", map_location=device)
        seed = CONTROL_SEED_BASE + 1000 * config.model_seed + level
        for control in config.controls:
            run = level_run(level, control)
            if run.complete:
                continue
            net = build_model(config.model, config.dataset, seed=config.model_seed).to(device)
            net.load_state_dict(start_source(level))
            if control == "reinit":
                control_masks = masks
                net = reinitialize(net, masks, seed)
            else:
                control_masks = shuffle_within_layers(masks, torch.Generator().manual_seed(seed))
                control_masks.apply(net)
            result = train_and_store(run, net, control_masks, level)
            run.finish()
            accuracy = result.metrics["test_accuracy"]
            log.info("level %d %s: test accuracy %.4f", level, control, accuracy)

    def train_level(level: int, masks: Masks) -> None:
        for control in CONTROLS:  # controls left by an earlier attempt used another mask
            shutil.rmtree(level_run(level, control).path, ignore_errors=True)
        run = level_run(level)
        result = train_and_store(run, model, masks, level)
        run.finish()
        accuracy = result.metrics["test_accuracy"]
        log.info("level %d: kept %d, test accuracy %.4f", level, masks.kept, accuracy)
        train_controls(level)

    first_level = next((lv for lv in range(len(plan)) if not level_run(lv).complete), len(plan))
    if first_level == 0:
        masks = Masks.dense(model)
        run = level_run(0)
        result = train_and_store(run, model, masks, 0, snapshot_at=(config.rewind,))
        rewind = {k: v.cpu() for k, v in result.snapshots[config.rewind].items()}
        atomic_torch_save(rewind, root / "rewind.pt")
        run.finish()
        first_level = 1
    else:
        last = level_run(first_level - 1).path
        model.load_state_dict(load(last / "final.pt"))
        masks = Masks.load(last / "masks.pt", map_location=device)
    rewind_state = load(root / "rewind.pt") if config.reset == "rewind" else None
    imp_loop(model, masks, plan, train_level, rewind_state=rewind_state, first_level=first_level)
    for level in range(1, len(plan)):
        train_controls(level)
    result = _collect(config, root, plan, level_configs)
    result.write_csv()
    return result


def _collect(
    config: ImpConfig, root: Path, plan: PruningPlan, level_configs: list[TrainConfig]
) -> ImpResult:
    """Read every stored level (and its controls) back into an `ImpResult`."""
    levels = []
    cost = SearchCost()
    for level in range(len(plan)):
        path = root / _level_name(level)
        metrics = json.loads((path / "metrics.json").read_text())
        masks = Masks.load(path / "masks.pt")
        controls = {}
        for control in config.controls:
            control_path = root / _level_name(level, control)
            if (control_path / MARKER).is_file():
                controls[control] = ControlRun(
                    control,
                    Masks.load(control_path / "masks.pt"),
                    json.loads((control_path / "metrics.json").read_text()),
                    control_path,
                )
        levels.append(
            ImpLevel(
                level=level,
                kept=plan.level_kept(level),
                compression=plan.compression(level),
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
