"""Linear mode connectivity and instability (Frankle, Dziugaite, Roy & Carbin 2020).

A network is stable at step k when two copies trained from its weights at step k with different
data orders (everything else the same) end in one linearly connected region: the test error
along the segment between them has no barrier. For each seed s and each rewinding step k:

1. the dense network (init seed s, data order s) trains for the whole budget T; its weights
   W_k at every requested k are kept (the parent run);
2. the start weights are m * W_k, m the mask (all ones for the dense network; a mask file, or
   the mask a method finds for seed s, for a sparse network);
3. two copies train from there under m with the data orders `seeds.stability_order(s, 0)` and
   `(s, 1)`, resuming the schedule at k for the remaining T - k steps (as open_lth does);
4. the test error is evaluated at `points` evenly spaced points W(a) = (1 - a) A + a B,
   a = 0, ..., 1, of the segment between the copies A and B (every floating tensor, BatchNorm
   statistics included, interpolated; with `bn_recompute` the BatchNorm statistics of every
   point are then recomputed on `bn_batches` training batches in stored order, as the paper
   does, since interpolated statistics do not describe the interpolated network);
5. instability = max_a error(W(a)) - (error(A) + error(B)) / 2, the height of the barrier.

Every training and every path is a run in the store (`pai.core.store`), so a rerun reads
them back and an added rewinding step trains only what it adds (the parent run keeps the
snapshots of the steps it was asked for; asking for new steps trains the parent again).
`stability.csv` has one row per rewinding step and seed, `path.csv` one per point.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn

from pai.core import seeds
from pai.core.atomic import atomic_write_text
from pai.core.errors import PaiError
from pai.core.steps import Step
from pai.core.store import FILES, Run
from pai.pruning.masks import Masks
from pai.training.checkpoint import DEFAULT_POLICY, CheckpointPolicy
from pai.training.config import TrainConfig

log = logging.getLogger(__name__)

State = dict[str, Tensor]
STABILITY_COLUMNS: tuple[str, ...] = (
    "rewind",
    "rewind_iterations",
    "seed",
    "instability",
    "error_start",
    "error_end",
    "max_error",
    "dense_error",
    "density",
)
PATH_COLUMNS: tuple[str, ...] = ("rewind", "seed", "alpha", "test_error")


@dataclass(frozen=True)
class StabilityConfig:
    """A stability experiment: which network, rewinding steps and seeds, under which training.

    `train.seed` is ignored (each seed s has its orders, `pai.core.seeds`). The network is
    dense, or sparse under `masks` (a mask file) or under the mask `method` finds at
    `compression` for each seed (with its default options). `points` >= 2 is the number of
    evaluation points on each path, both ends included.
    """

    model: str
    dataset: str
    train: TrainConfig
    rewinds: tuple[str, ...] = ("0it",)
    seeds: tuple[int, ...] = (0,)
    points: int = 11
    masks: str | None = None
    method: str | None = None
    compression: float | None = None
    bn_recompute: bool = True
    bn_batches: int = 10
    train_per_class: int | None = None

    def __post_init__(self) -> None:
        if not self.rewinds:
            raise PaiError("no rewinding steps given; e.g. 0,500it,2ep")
        object.__setattr__(self, "rewinds", tuple(Step.canonical(r) for r in self.rewinds))
        if not self.seeds:
            raise PaiError("no seeds given")
        if isinstance(self.points, bool) or not isinstance(self.points, int) or self.points < 2:
            raise PaiError(f"points must be a whole number >= 2 (both ends), got {self.points!r}")
        if self.bn_batches < 1:
            raise PaiError(f"bn_batches must be >= 1, got {self.bn_batches!r}")
        if self.masks is not None and self.method is not None:
            raise PaiError("give a mask file or a method, not both")
        if (self.method is None) != (self.compression is None):
            raise PaiError("a method needs a compression and a compression needs a method")
        if self.compression is not None and not (
            math.isfinite(self.compression) and self.compression >= 1
        ):
            raise PaiError(f"compression must be a finite number >= 1, got {self.compression!r}")


def interpolate(first: State, second: State, alpha: float) -> State:
    """(1 - alpha) * first + alpha * second for every floating tensor; others from `first`."""
    out = {}
    for key, a in first.items():
        b = second[key].to(a.device)
        out[key] = torch.lerp(a, b.to(a.dtype), alpha) if a.is_floating_point() else a.clone()
    return out


def instability(errors: Sequence[float]) -> float:
    """The error barrier of a path: its largest error minus the mean of its two ends."""
    if len(errors) < 2:
        raise PaiError(f"a path needs at least its two ends, got {len(errors)} errors")
    return max(errors) - (errors[0] + errors[-1]) / 2


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def recompute_batch_norm(model: nn.Module, batches: Sequence[tuple[Tensor, Tensor]]) -> None:
    """Replace every BatchNorm's running statistics by their average over `batches` (each
    batch's statistics in training mode, equally weighted: momentum None). The model's mode
    and the BatchNorm momenta are restored."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    for x, _ in batches:
        model(x)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.train(was_training)


def path_errors(
    model: nn.Module,
    first: State,
    second: State,
    alphas: Sequence[float],
    test,
    bn_batches: Sequence[tuple[Tensor, Tensor]] | None = None,
) -> list[float]:
    """Test error (1 - accuracy) of `model` at each point W(a) = (1 - a) first + a second.

    With `bn_batches`, BatchNorm statistics are recomputed on them at every point. `model`
    ends holding the last point's weights.
    """
    from pai.training.loop import evaluate

    errors = []
    for alpha in alphas:
        model.load_state_dict(interpolate(first, second, float(alpha)))
        if bn_batches:
            recompute_batch_norm(model, bn_batches)
        errors.append(1.0 - evaluate(model, test)[0])
    return errors


def alphas_of(points: int) -> list[float]:
    """`points` evenly spaced points of [0, 1], both ends included."""
    return [i / (points - 1) for i in range(points)]


class _Experiment:
    """The runs of one stability experiment: parents, masks, copies and paths, in a store."""

    def __init__(self, config: StabilityConfig, data, store: Path, device, progress, checkpoint):
        self.config, self.data, self.store = config, data, store
        self.device, self.progress, self.checkpoint = device, progress, checkpoint
        self.steps_per_epoch = data.train.num_batches(config.train.batch_size)
        total = Step.parse(config.train.budget).iterations(self.steps_per_epoch)
        for rewind in config.rewinds:
            if Step.parse(rewind).iterations(self.steps_per_epoch) >= total:
                raise PaiError(
                    f"rewind step {rewind} leaves nothing to train in the budget "
                    f"{config.train.budget} ({total} iterations); allowed: 0 to {total - 1} "
                    "iterations"
                )
        self.rewinds = sorted(config.rewinds, key=self.iterations)
        self.file_masks = None
        if config.masks is not None:
            self.file_masks = Masks.load(config.masks)

    def iterations(self, rewind: str) -> int:
        return Step.parse(rewind).iterations(self.steps_per_epoch)

    def build(self, seed: int) -> nn.Module:
        from pai.models import build_model

        model = build_model(self.config.model, self.config.dataset, seed=seeds.model_init(seed))
        return model.to(self.device)

    def _train(self, run: Run, model, config: TrainConfig, **options):
        from pai.training.record import train_into

        return train_into(
            run,
            model,
            self.data,
            config,
            progress=self.progress,
            checkpoint=self.checkpoint,
            **options,
        )

    def parent(self, seed: int) -> tuple[Run, dict[str, State], float]:
        """The dense run of `seed` for the whole budget, its weights at every rewinding step,
        and its final test error."""
        train = self.config.train.replace(seed=seeds.data_order(seed))
        identity = {
            "model": self.config.model,
            "dataset": self.config.dataset,
            "model_seed": seed,
            "train": train,
            "train_per_class": self.config.train_per_class,
            "snapshots": self.rewinds,
        }
        run = Run(self.store, "stability-parent", identity)
        names = {rewind: f"snapshot-{rewind}.pt" for rewind in self.rewinds}
        if not run.complete:
            result = self._train(run, self.build(seed), train, snapshot_at=tuple(self.rewinds))
            for rewind, name in names.items():
                run.save_tensors(name, {k: v.cpu() for k, v in result.snapshots[rewind].items()})
            run.finish()
        snapshots = {rewind: self._load(run.path / name) for rewind, name in names.items()}
        return run, snapshots, 1.0 - run.read_json(FILES.metrics)["test_accuracy"]

    def _load(self, path: Path) -> State:
        return torch.load(path, map_location=self.device, weights_only=True)

    def masks(self, seed: int) -> Masks | None:
        """The mask of `seed`'s network: None (dense), the file's, or the method's ticket's."""
        if self.file_masks is not None:
            return self.file_masks
        if self.config.method is None:
            return None
        from pai.search.methods import get_search
        from pai.search.protocol import SearchContext, SearchRequest

        search = get_search(self.config.method)
        request = SearchRequest(
            model=self.config.model,
            dataset=self.config.dataset,
            compression=float(self.config.compression),
            seed=seed,
            train=self.config.train.replace(seed=seeds.data_order(seed)),
            train_per_class=self.config.train_per_class,
            compressions=(float(self.config.compression),),
            options=search.options_for(None),
        )
        context = SearchContext(self.data, self.device, self.store, self.progress)
        return search.find(request, context).masks

    def copy(self, parent: Run, seed: int, rewind: str, copy: int, masks, start: State) -> Run:
        """Copy `copy` (0 or 1) trained from `start` (m * W_k) to the end of the budget."""
        from pai.training.checkpoint import state_digest

        train = self.config.train.replace(seed=seeds.stability_order(seed, copy))
        identity = {
            "parent": parent.hash,
            "rewind": rewind,
            "copy": copy,
            "masks": None if masks is None else state_digest(masks),
            "train": train,
        }
        run = Run(self.store, "stability-copy", identity)
        if not run.complete:
            model = self.build(seed)
            model.load_state_dict(start)
            self._train(run, model, train, masks=masks, start_at=rewind)
            run.finish()
        return run

    def path(self, seed: int, copies: tuple[Run, Run]) -> list[float]:
        """The test errors along the segment between the two copies' final weights."""
        config = self.config
        identity = {
            "copies": [run.hash for run in copies],
            "points": config.points,
            "bn_recompute": config.bn_recompute,
            "bn_batches": config.bn_batches,
        }
        run = Run(self.store, "stability-path", identity)
        if not run.complete:
            model = self.build(seed)
            batches = None
            if config.bn_recompute and has_batch_norm(model):
                batches = list(self.data.train.eval_batches(config.train.batch_size))
                batches = batches[: config.bn_batches]
            first, second = (self._load(r.path / FILES.final) for r in copies)
            errors = path_errors(
                model, first, second, alphas_of(config.points), self.data.test, batches
            )
            run.start()
            run.write_json("path.json", {"alphas": alphas_of(config.points), "errors": errors})
            run.finish()
        return run.read_json("path.json")["errors"]


def run_stability(
    config: StabilityConfig,
    out: str | Path,
    *,
    store: str | Path | None = None,
    data=None,
    data_root: str | Path | None = None,
    device: torch.device | str | None = None,
    progress: bool | None = None,
    checkpoint: CheckpointPolicy | None = DEFAULT_POLICY,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run (or read back) every run of `config`; write stability.csv, path.csv and the figures.

    Runs go to `store` (default `out/runs`), each training checkpointing as `checkpoint` says
    (None: never). `data` is a loaded dataset used as given (otherwise `config.dataset` is
    loaded onto `device`, cut to `train_per_class`). Returns (stability table, path table).
    """
    from pai.core.devices import resolve_device
    from pai.data.loading import load_for_training
    from pai.report.stability_plots import plot_error_along_path, plot_instability

    device = resolve_device(device)
    if data is None:
        data = load_for_training(
            config.dataset, root=data_root, device=device, train_per_class=config.train_per_class
        )
    out = Path(out)
    store = Path(store) if store is not None else out / "runs"
    experiment = _Experiment(config, data, store, device, progress, checkpoint)
    rows, points = [], []
    for seed in config.seeds:
        parent, snapshots, dense_error = experiment.parent(seed)
        masks = experiment.masks(seed)
        density = 1.0 if masks is None else masks.density
        for rewind in experiment.rewinds:
            start = dict(snapshots[rewind])
            if masks is not None:
                start = {k: v * masks[k].to(v) if k in masks else v for k, v in start.items()}
            copies = tuple(experiment.copy(parent, seed, rewind, c, masks, start) for c in (0, 1))
            errors = experiment.path(seed, copies)
            rows.append(
                {
                    "rewind": rewind,
                    "rewind_iterations": experiment.iterations(rewind),
                    "seed": seed,
                    "instability": instability(errors),
                    "error_start": errors[0],
                    "error_end": errors[-1],
                    "max_error": max(errors),
                    "dense_error": dense_error,
                    "density": density,
                }
            )
            points += [
                {"rewind": rewind, "seed": seed, "alpha": a, "test_error": e}
                for a, e in zip(alphas_of(config.points), errors, strict=True)
            ]
            log.info("seed %d, rewind %s: instability %.4f", seed, rewind, rows[-1]["instability"])
    table = pd.DataFrame(rows, columns=list(STABILITY_COLUMNS))
    path = pd.DataFrame(points, columns=list(PATH_COLUMNS))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "stability.csv", table.to_csv(index=False))
    atomic_write_text(out / "path.csv", path.to_csv(index=False))
    kind = "dense" if density == 1.0 else f"density {density:.3g}"
    title = f"{config.model} on {config.dataset} ({kind}), {config.train.budget}"
    plot_error_along_path(path, out / "error_along_path.png", title=title)
    plot_instability(table, out / "instability_vs_rewind.png", title=title)
    return table, path
