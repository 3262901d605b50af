"""The critical-compression experiment (SynFlow's Fig. 1): how far each scorer can prune at
initialization before a layer empties (Tanaka et al. 2020), beside the bound N/L.

Plan: for every seed the model is built once from the seed and every scorer prunes that same
model; scorers that need data all get the same seeded class-balanced batch of the seed. Run:
per scorer and seed, the critical compression (`pai.pruning.collapse.critical_compression`),
then the masks at the fixed compressions and at `density_at`. Record, into the output folder:
collapse.csv (one row per scorer and seed), collapse.md (mean and sd per scorer),
layer_density.png, alive_layers.png and, with `compressions`, fixed_compressions.csv; the files
are rewritten after every scorer, so an interrupted experiment leaves what it measured.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from pai.core.atomic import atomic_write_json, atomic_write_text
from pai.core.devices import resolve_device
from pai.core.errors import PaiError
from pai.core.store import canonical, file_problem
from pai.data.fitting import fit_to_input_shape
from pai.data.loading import Split, load_dataset, scoring_batches
from pai.data.specs import DatasetSpec, dataset_spec
from pai.experiments.collapse_config import CollapseConfig
from pai.models import build_model
from pai.pruning.collapse import (
    CriticalCompression,
    critical_compression,
    effective_masks,
    layer_collapse,
)
from pai.pruning.driver import prune
from pai.pruning.masks import Masks
from pai.pruning.registry import Scorer, get_scorer
from pai.report.collapse_plots import plot_alive_layers, plot_layer_density

log = logging.getLogger(__name__)

CSV_COLUMNS = (
    "scorer",
    "seed",
    "log10_critical_compression",
    "first_collapsed_layer",
    "log10_max_compression",
)
DATA_FREE = "none (data-free)"
CONFIG_FILE = "collapse.json"  # the config and what the figures need, for `pai report`


@dataclass
class CollapseRecord:
    """The rows measured so far: per scorer and seed (`results`), per fixed compression
    (`fixed`), per layer at `density_at` on seed 0 (`densities`), and the points of every
    layers-alive curve (`alive`); `max_compression` is rho_max of the model."""

    results: list[dict[str, Any]] = field(default_factory=list)
    fixed: list[dict[str, Any]] = field(default_factory=list)
    densities: list[dict[str, Any]] = field(default_factory=list)
    alive: list[dict[str, Any]] = field(default_factory=list)
    max_compression: float = math.nan


def run_collapse(
    config: CollapseConfig,
    out: str | Path,
    *,
    data_root: str | Path | None = None,
    device: torch.device | str | None = None,
    scheduler: str | None = None,
) -> pd.DataFrame:
    """Measure every scorer on every seed, write the outputs into `out`; the summary table.

    `scheduler` (`local:N`, a dask address or a scheduler file) measures each scorer and seed
    as a task of its own on that cluster (`measure_task`, its rows sent back), `device` then
    being the workers' (None: theirs to choose); a task that fails is reported by
    `executors.RunsFailed` once the outputs of the others are written.
    """
    if scheduler is not None:
        return _run_on_cluster(config, Path(out), data_root, device, scheduler)
    scorers = _prune_at_init_scorers(config)
    spec = dataset_spec(config.dataset)
    if config.data_from is not None and not any(s.needs_data for s in scorers):
        log.warning("--data-from is unused: none of %s needs data", ", ".join(config.scorers))
    device = resolve_device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    source = dataset_spec(config.data_from or spec.name)
    train = None  # dataset files are read only when some scorer needs data
    if any(s.needs_data for s in scorers):
        train = load_dataset(source.name, root=data_root, device="cpu").train
    record = CollapseRecord()
    for seed in range(config.seeds):
        model = build_model(config.model, spec, seed=seed)
        data, data_note = None, DATA_FREE
        if train is not None:
            data, data_note = scoring_data(config, spec, source, train, seed)
        for scorer in scorers:
            _measure(config, model, scorer, seed, (data, data_note), device, record)
            write_outputs(config, record, seed + 1, out)
    return write_outputs(config, record, config.seeds, out)


def measure_task(
    config: CollapseConfig, scorer_name: str, seed: int, data_root: str | Path | None, device
) -> CollapseRecord:
    """Task: one scorer on the model of one seed, measured into a record of its own (the same
    rows `run_collapse` measures in this process)."""
    scorer = get_scorer(scorer_name)
    spec = dataset_spec(config.dataset)
    source = dataset_spec(config.data_from or spec.name)
    data = (None, DATA_FREE)
    if scorer.needs_data:
        train = load_dataset(source.name, root=data_root, device="cpu").train
        data = scoring_data(config, spec, source, train, seed)
    model = build_model(config.model, spec, seed=seed)
    record = CollapseRecord()
    _measure(config, model, scorer, seed, data, resolve_device(device), record)
    return record


def _run_on_cluster(
    config: CollapseConfig, out: Path, data_root, device, scheduler: str
) -> pd.DataFrame:
    """One task per scorer and seed on `scheduler`; the records merged in seed, then scorer,
    order (as `run_collapse` measures them) and written at the end."""
    from pai.experiments.executors import RunsFailed, Task, check_scheduler, run_tasks

    _prune_at_init_scorers(config)
    check_scheduler(scheduler)
    out.mkdir(parents=True, exist_ok=True)
    device = None if device is None else str(device)
    tasks = [
        Task(
            f"collapse-{scorer}-seed{seed}",
            measure_task,
            (config, scorer, seed, data_root, device),
            label=f"{scorer} seed {seed}",
            config=f"{config.model} {config.dataset} scorer {scorer} seed {seed}",
        )
        for seed in range(config.seeds)
        for scorer in config.scorers
    ]
    records: dict[str, CollapseRecord] = {}
    failures = run_tasks(
        tasks, scheduler, on_done=lambda task, got: records.update({task.key: got})
    )
    record = CollapseRecord()
    for task in tasks:
        part = records.get(task.key)
        if part is not None:
            record.results += part.results
            record.fixed += part.fixed
            record.densities += part.densities
            record.alive += part.alive
            record.max_compression = part.max_compression
    if not record.results:
        raise RunsFailed(failures)
    summary = write_outputs(config, record, config.seeds, out)
    if failures:
        raise RunsFailed(failures, result=summary)
    return summary


def _prune_at_init_scorers(config: CollapseConfig) -> list[Scorer]:
    """The configured scorers, refusing any that finds its mask by training."""
    scorers = [get_scorer(name) for name in config.scorers]
    for scorer in scorers:
        if getattr(scorer, "needs_training", False):
            raise PaiError(f"scorer {scorer.name!r} finds its mask by training; pai collapse "
                           "compares scorers that prune at initialization")  # fmt: skip
    return scorers


def scoring_data(
    config: CollapseConfig, spec: DatasetSpec, source: DatasetSpec, train: Split, seed: int
) -> tuple[list[tuple[Tensor, Tensor]], str]:
    """The seeded class-balanced batches of `train` (the training split of `source`, on the
    CPU: prune moves them to its device) fitted to a model for `spec`, and a note saying where
    they come from."""
    batches = scoring_batches(train, config.per_class, seed, config.batch_size)
    note = f"{source.name} train, {config.per_class} per class"
    if source.name == spec.name:
        return batches, note
    if source.num_classes > spec.num_classes:
        raise PaiError(
            f"--data-from {source.name} has {source.num_classes} classes, more than the "
            f"{spec.num_classes} outputs of a model for {spec.name}"
        )
    fitted = []
    for x, y in batches:
        x, how = fit_to_input_shape(x, source, spec.input_shape)
        fitted.append((x, y))
    return fitted, f"{note}{', ' + how if how else ''} (no {spec.name} files here)"


def _measure(
    config: CollapseConfig,
    model: nn.Module,
    scorer: Scorer,
    seed: int,
    data: tuple[list[tuple[Tensor, Tensor]] | None, str],
    device: torch.device,
    record: CollapseRecord,
) -> None:
    """One scorer on one seed's model: its critical compression and its fixed-compression masks."""
    started = time.perf_counter()
    batches, data_note = data
    common = {
        "data": batches if scorer.needs_data else None,
        "rounds": config.rounds,
        "scope": config.scope,
        "seed": seed,
        "schedule": config.schedule,
        "device": device,
    }
    result = critical_compression(
        model, scorer, resolution=config.resolution, criterion=config.criterion,
        search=config.search, **common,
    )  # fmt: skip
    record.max_compression = result.max_compression
    layer_names = list(Masks.dense(model))
    extra: list[tuple[float, float]] = []
    if result.layer_limits is None:
        extra = [
            (math.log10(p.compression), 1 - len(p.collapsed_layers) / len(layer_names))
            for p in result.probes
        ]
    extra += _prune_at_targets(config, model, scorer, seed, common, record)
    record.alive += [
        {"scorer": scorer.name, "seed": seed, **row} for row in _alive_rows(result, extra)
    ]
    record.results.append(
        {
            "scorer": scorer.name,
            "seed": seed,
            "log10_critical_compression": result.log10,
            "first_collapsed_layer": result.first_collapsed_layer or "",
            "log10_max_compression": math.log10(result.max_compression),
            "first_collapsed": _first_collapsed_label(result, layer_names),
            "critical_compression": float(result),
            "max_compression": result.max_compression,
            "collapsed_at": result.collapsed_at,
            "method": result.method,
            "criterion": result.criterion,
            "scope": config.scope,
            "rounds": config.rounds or scorer.default_rounds,
            "prune_calls": result.prune_calls,
            "data": data_note if scorer.needs_data else DATA_FREE,
            "seconds": round(time.perf_counter() - started, 1),
        }
    )
    log.info("%s seed %d: %r", scorer.name, seed, result)


def _prune_at_targets(
    config: CollapseConfig,
    model: nn.Module,
    scorer: Scorer,
    seed: int,
    common: dict[str, Any],
    record: CollapseRecord,
) -> list[tuple[float, float]]:
    """Prune at the fixed compressions (every seed) and at `density_at` (seed 0 only), record
    their rows, and return their (log10 compression, fraction of layers alive) points."""
    points = []
    for target in sorted(set(config.compressions) | {config.density_at}):
        if target not in config.compressions and seed != 0:
            continue
        masks = prune(model, scorer, target, **common)
        collapsed = layer_collapse(masks)
        points.append((math.log10(target), 1 - len(collapsed) / len(masks)))
        if target == config.density_at and seed == 0:
            record.densities += [{"scorer": scorer.name, **row} for row in _layer_rows(masks)]
        if target in config.compressions:
            effective = effective_masks(model, masks).compression
            record.fixed.append(
                {
                    "scorer": scorer.name, "seed": seed, "compression": target,
                    "log10_compression": math.log10(target),
                    "collapsed_layers": len(collapsed),
                    "first_collapsed_layer": collapsed[0] if collapsed else "",
                    "effective_compression": effective,
                    "log10_effective_compression": math.log10(effective),
                    "disconnected": math.isinf(effective),
                }
            )  # fmt: skip
    return points


def _layer_rows(masks: Masks) -> list[dict]:
    return [
        {"layer_index": index, "layer": name, "kept": int(m.sum()), "total": m.numel(),
         "density": int(m.sum()) / m.numel()}
        for index, (name, m) in enumerate(masks.items(), start=1)
    ]  # fmt: skip


def _alive_rows(result: CriticalCompression, extra: list[tuple[float, float]]) -> list[dict]:
    """Points of the layers-alive curve: exact steps, or the pruned masks (plus the dense net)."""
    if result.layer_limits is not None:
        # past each limit one more layer is empty; the last limit is N (one weight kept), the
        # end of the range, where one layer is still alive
        limits = sorted(result.layer_limits.values())
        layers = len(limits)
        points = [(0.0, 1.0)]
        points += [(math.log10(limit), 1 - (i + 1) / layers) for i, limit in enumerate(limits[:-1])]
        points.append((math.log10(limits[-1]), 1 / layers))
        return [{"log10_compression": x, "alive_fraction": f, "source": "exact"} for x, f in points]
    points = [(0.0, 1.0), *extra]
    return [{"log10_compression": x, "alive_fraction": f, "source": "pruned"} for x, f in points]


def _first_collapsed_label(result: CriticalCompression, layer_names: list[str]) -> str:
    """The first empty layer as "index: name", or why there is none."""
    first = result.first_collapsed_layer
    if first is not None:
        return f"{layer_names.index(first) + 1}: {first}"
    return "none up to rho_max" if result.collapsed_at is None else "none empty (disconnected)"


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Per scorer: mean and sample sd of log10 critical compression, most common first layer."""
    rows = []
    for scorer, group in results.groupby("scorer", sort=False):
        layers = Counter(group["first_collapsed"])  # ties: the earliest seed's layer
        rows.append(
            {
                "scorer": scorer,
                "rounds": int(group["rounds"].iloc[0]),
                "method": group["method"].iloc[0],
                "seeds": len(group),
                "log10 rho_cr mean": group["log10_critical_compression"].mean(),
                "log10 rho_cr sd": group["log10_critical_compression"].std(ddof=1)
                if len(group) > 1
                else float("nan"),
                "first collapsed layer (most common)": layers.most_common(1)[0][0],
                "log10 rho_max": group["log10_max_compression"].iloc[0],
                "data": group["data"].iloc[0],
            }
        )
    return pd.DataFrame(rows)


def summary_markdown(config: CollapseConfig, summary: pd.DataFrame, seeds: int) -> str:
    """collapse.md: what was measured, then the summary table."""
    header = (
        f"# Critical compression: {config.model} for {config.dataset}\n\n"
        f"Scope {config.scope}, criterion {config.criterion}, seeds 0 to {seeds - 1} "
        f"(sd over seeds, sample sd), search resolution {config.resolution:g} decades for "
        "iterative scorers; one-shot scorers are exact. rho_max = N / L (prunable weights / "
        "prunable layers) is the largest compression at which every layer can keep a weight.\n\n"
    )
    table = summary.to_markdown(index=False, floatfmt=".3f")
    return header + table + "\n"


def write_outputs(
    config: CollapseConfig, record: CollapseRecord, seeds_done: int, out: Path
) -> pd.DataFrame:
    """Write the tables and figures of the first `seeds_done` seeds into `out`; the summary."""
    table = pd.DataFrame(record.results)
    csv_columns = [*CSV_COLUMNS, *(c for c in table.columns if c not in CSV_COLUMNS)]
    atomic_write_text(out / "collapse.csv", table[csv_columns].to_csv(index=False))
    summary = summarize(table)
    atomic_write_text(out / "collapse.md", summary_markdown(config, summary, seeds_done))
    if record.fixed:
        atomic_write_text(
            out / "fixed_compressions.csv", pd.DataFrame(record.fixed).to_csv(index=False)
        )
    name = f"{config.model} ({config.dataset})"
    if record.densities:
        plot_layer_density(
            pd.DataFrame(record.densities),
            config.density_at,
            f"{name}: per-layer density at compression {config.density_at:g} (seed 0)",
            out / "layer_density.png",
        )
    plot_alive_layers(
        pd.DataFrame(record.alive),
        record.max_compression,
        f"{name}: layers keeping a weight ({config.scope} pruning)",
        out / "alive_layers.png",
    )
    # the figures' data and the config, so `read_outputs` rebuilds all of this without pruning
    atomic_write_text(out / "layer_density.csv", pd.DataFrame(record.densities).to_csv(index=False))
    atomic_write_text(out / "alive_layers.csv", pd.DataFrame(record.alive).to_csv(index=False))
    stored = {"config": canonical(config), "seeds_done": seeds_done}
    atomic_write_json(out / CONFIG_FILE, {**stored, "max_compression": record.max_compression})
    return summary


def read_outputs(out: str | Path) -> tuple[CollapseConfig, CollapseRecord, int]:
    """The config, record and seed count `write_outputs` wrote into `out`, read back (PaiError
    for a folder written before `collapse.json` was kept, or whose files do not read back)."""
    out = Path(out)
    problem = file_problem(out / CONFIG_FILE, ("config", "seeds_done", "max_compression"))
    if problem is not None:
        raise PaiError(f"{str(out)!r} cannot be reported: {problem}; run pai collapse again")
    stored = json.loads((out / CONFIG_FILE).read_text())
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in stored["config"].items()}

    def rows(name: str) -> list[dict[str, Any]]:
        path = out / name
        if not path.is_file() or not path.read_text().strip():
            return []
        frame = pd.read_csv(path).astype(object)
        return frame.where(frame.notna(), None).to_dict("records")

    record = CollapseRecord(
        results=rows("collapse.csv"),
        fixed=rows("fixed_compressions.csv"),
        densities=rows("layer_density.csv"),
        alive=rows("alive_layers.csv"),
        max_compression=stored["max_compression"],
    )
    return CollapseConfig(**values), record, stored["seeds_done"]
