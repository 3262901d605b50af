"""Running a comparison: train what is not yet complete, rebuild the tables and the figure.

Runs train in this process in plan order, or (`jobs` > 1) one seed per worker process through
joblib (`prefer="processes"`, so a caller's `joblib.parallel_config` chooses the backend), or
(`scheduler`) one task per run on a dask.distributed cluster (`pai.experiments.executors`,
the graph in `pai.experiments.compare.tasks`), whose workers write the store. Every run is
claimed before it trains, so two sweeps into one store train it once. `runs.csv` is rebuilt
from the store after every run (on a cluster: when the graph is done), so an interruption
loses only the runs in progress.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from pai.core.errors import PaiError
from pai.experiments.compare.config import CompareConfig, RunSpec
from pai.experiments.compare.plan import plan_runs, run_for
from pai.experiments.compare.record import COMPARE_CONTENTS, write_runs_csv
from pai.experiments.compare.tasks import compute_runs
from pai.experiments.compare.tickets import TicketFinder
from pai.experiments.executors import (
    RunsFailed,
    check_scheduler,
    check_stack_request,
    run_tasks,
)
from pai.training.checkpoint import DEFAULT_POLICY, CheckpointPolicy

log = logging.getLogger(__name__)


def _row_line(index: int, count: int, label: str, row: Mapping[str, Any]) -> str:
    collapsed = ", collapsed" if row["collapsed"] else ""
    reused = ", IMP's training reused" if row["reused_training"] else ""
    return (
        f"[{index}/{count}] {label}: compression {row['compression']:.4g}, test accuracy "
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
    data=None,
    checkpoint: CheckpointPolicy | None = DEFAULT_POLICY,
    stack: int | None = None,
) -> None:
    """Find and train the tickets of `pending` in plan order, in this process, into `store`.

    Runs train side by side in stacks of up to `stack` consecutive runs (None: the device's
    default, `pai.training.stacked.default_stack_size`; 1: one at a time, checkpointing), and
    the searches first compute together what several runs share (IMP's levels of every seed
    in lockstep). `after_each()` runs after every stack (the caller rebuilds its tables
    there). `data` is the dataset as `check_runnable` loaded it onto `device` (None: loaded
    here). A run another process finished meanwhile is read, not trained (`compute_runs`).
    """
    from pai.core.devices import resolve_device
    from pai.data.loading import load_for_training
    from pai.training.stacked import default_stack_size

    show = sys.stderr.isatty() if progress is None else progress
    device = resolve_device(device)
    if data is None:
        data = load_for_training(
            config.dataset, root=data_root, device=device, train_per_class=config.train_per_class
        )
    finder = TicketFinder(
        config, data, store, device=device, progress=progress, checkpoint=checkpoint
    )
    size = stack or default_stack_size(finder.build(pending[0]), data, config.train, device)
    finder.prepare(pending, stack_size=size)
    bar = tqdm(total=len(pending), unit="run", disable=not show, dynamic_ncols=True)
    with bar:
        for first in range(0, len(pending), size):
            chunk = pending[first : first + size]
            bar.set_description(chunk[0].label if len(chunk) == 1 else f"{len(chunk)} runs")
            started = time.perf_counter()
            rows = compute_runs(chunk, finder, store, stack_size=size)
            if after_each is not None:
                after_each()
            log.info("%d runs done in %.1f s", len(chunk), time.perf_counter() - started)
            for index, (spec, (row, _)) in enumerate(zip(chunk, rows, strict=True), first + 1):
                tqdm.write(_row_line(index, len(pending), spec.label, row), file=sys.stderr)
            bar.update(len(chunk))


def _train_in_worker(
    config: CompareConfig,
    pending: list[RunSpec],
    store: Path,
    data_root: str | Path | None,
    device: str | None,
    threads: int,
    checkpoint: CheckpointPolicy | None,
    stack: int | None,
) -> None:
    """One worker process of `run_comparison(jobs > 1)`: one seed's runs, `threads` threads."""
    torch.set_num_threads(threads)
    train_runs(
        config,
        pending,
        store,
        data_root=data_root,
        device=device,
        progress=False,
        checkpoint=checkpoint,
        stack=stack,
    )


def _train_on_cluster(
    config: CompareConfig,
    pending: list[RunSpec],
    store: Path,
    data,
    scheduler: str,
    *,
    data_root: str | Path | None,
    device: str | None,
    progress: bool | None,
    checkpoint: CheckpointPolicy | None,
) -> list:
    """Train `pending` as one task per run on `scheduler`; the failures (`executors.Failure`).

    `data` is the dataset on the CPU, to plan with: the client trains nothing.
    """
    from pai.experiments.compare.tasks import sweep_tasks

    finder = TicketFinder(config, data, store, device=torch.device("cpu"), checkpoint=checkpoint)
    tasks = sweep_tasks(
        config, pending, store, finder, data_root=data_root, device=device, checkpoint=checkpoint
    )
    done = []

    def report(task, result: Mapping[str, Any]) -> None:
        done.append(task.key)
        if "row" in result:
            line = _row_line(len(done), len(tasks), task.label, result["row"])
        else:
            line = f"[{len(done)}/{len(tasks)}] {task.label}: stored"
        found = "" if result["trained"] else " (found complete: computed by another process)"
        tqdm.write(line + found, file=sys.stderr)

    return run_tasks(tasks, scheduler, on_done=report, progress=progress)


def _check_parallel(
    config: CompareConfig, jobs: int, scheduler: str | None = None, stack: int | None = None
) -> None:
    """PaiError for an engine that cannot run `config`: bad jobs or stack, jobs or a stack with
    a scheduler, an unreachable scheduler, or a scorer registered in this process only."""
    from pai.pruning.registry import IN_PROCESS, scorer_entries

    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise PaiError(f"jobs must be a whole number >= 1, got {jobs!r}")
    check_stack_request(stack, scheduler)
    if scheduler is not None:
        if jobs != 1:
            raise PaiError(f"jobs={jobs} and scheduler={scheduler!r}: choose one of the two")
        check_scheduler(scheduler)
    if jobs == 1 and scheduler is None:
        return
    where = f"jobs={jobs}" if scheduler is None else f"scheduler {scheduler!r}"
    sources = {entry.name: entry.source for entry in scorer_entries()}
    for method in config.methods:
        if sources.get(method) == IN_PROCESS:
            raise PaiError(
                f"scorer {method!r} is registered in this process only, and {where} trains "
                "in other processes that see installed plugins only; use jobs=1"
            )


def check_runnable(config: CompareConfig, data_root: str | Path | None, device=None):
    """PaiError for what would fail only once training starts; the dataset loaded on `device`.

    The model must exist and take the dataset's inputs, every compression must leave each
    layer the scope prunes separately at least one weight, and the dataset's files must be
    there (or downloadable) with `train_per_class` examples of every class. Run before the
    first line of output, so that a bad value is the only line a failed command prints.
    """
    from pai.data.loading import load_for_training
    from pai.models import build_model
    from pai.pruning.masks import kept_count, layerwise_counts, prunable_parameters

    sizes = {
        n: p.numel()
        for n, p in prunable_parameters(build_model(config.model, config.dataset)).items()
    }
    for compression in config.compressions:
        kept_count(sum(sizes.values()), compression)
        if config.scope == "layerwise":
            layerwise_counts(sizes, compression)
    return load_for_training(
        config.dataset, root=data_root, device=device, train_per_class=config.train_per_class
    )


def _train_in_workers(
    config: CompareConfig,
    pending: list[RunSpec],
    store: Path,
    data_root: str | Path | None,
    device: str | None,
    jobs: int,
    checkpoint: CheckpointPolicy | None,
    stack: int | None,
) -> None:
    """`pending` trained by up to `jobs` joblib worker processes, one seed's runs per worker."""
    from joblib import Parallel, delayed

    by_seed: dict[int, list[RunSpec]] = {}
    for spec in pending:
        by_seed.setdefault(spec.seed, []).append(spec)
    workers = min(jobs, len(by_seed))
    threads = max(1, (os.cpu_count() or 1) // workers)
    Parallel(n_jobs=workers, prefer="processes")(
        delayed(_train_in_worker)(
            config, runs, store, data_root, device, threads, checkpoint, stack
        )
        for runs in by_seed.values()
    )


def _write_summary_and_figure(config: CompareConfig, table: pd.DataFrame, out: Path) -> None:
    """`summary.csv`, `summary.md` and the accuracy figure of the runs in `table`, if any."""
    from pai.report.plots import plot_accuracy_vs_compression
    from pai.report.tables import write_summary

    if table.empty:
        return
    write_summary(table, out)
    title = f"{config.model} on {config.dataset}, {config.train.budget} per ticket"
    plot_accuracy_vs_compression(table, out / "accuracy_vs_compression.png", title=title)


def run_comparison(
    config: CompareConfig,
    out: str | Path,
    *,
    store: str | Path | None = None,
    data_root: str | Path | None = None,
    device: torch.device | str | None = None,
    progress: bool | None = None,
    jobs: int = 1,
    scheduler: str | None = None,
    checkpoint: CheckpointPolicy | None = DEFAULT_POLICY,
    stack: int | None = None,
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

    `scheduler` (`local:N`, a dask address or a scheduler file; see
    `pai.experiments.executors`) trains one task per run on that cluster instead; the store
    must be a path every worker sees, and the workers choose their device (`device`, if given,
    is passed to them; None: CUDA where they have it). Runs that raise are reported at the
    end by `executors.RunsFailed`, raised once the tables of the others are written.
    `checkpoint` is how every run checkpoints as it trains (None: never). `stack` bounds how
    many runs train side by side in one loop, in this process or a joblib worker (`train_runs`;
    None: the device's default; 1: one at a time); a cluster's task is one run.
    """
    from pai.core.devices import resolve_device

    out = Path(out)
    store = Path(store) if store is not None else out / "runs"
    _check_parallel(config, jobs, scheduler, stack)
    specs = plan_runs(config)
    pending = [spec for spec in specs if not run_for(spec, store).verified(COMPARE_CONTENTS)]
    data = None
    local = jobs == 1 and scheduler is None
    if pending:  # elsewhere: checked here on the CPU, loaded again by each worker
        data = check_runnable(config, data_root, resolve_device(device) if local else "cpu")
    out.mkdir(parents=True, exist_ok=True)
    print(f"{len(specs)} runs, {len(specs) - len(pending)} already complete", file=sys.stderr)
    failures = []
    device_name = None if device is None else str(device)
    try:
        if pending and scheduler is not None:
            failures = _train_on_cluster(
                config,
                pending,
                store,
                data,
                scheduler,
                data_root=data_root,
                device=device_name,
                progress=progress,
                checkpoint=checkpoint,
            )
        elif pending and jobs == 1:
            after_each = lambda: write_runs_csv(specs, store, out)  # noqa: E731
            train_runs(config, pending, store, data_root=data_root, device=device,
                       progress=progress, after_each=after_each, data=data,
                       checkpoint=checkpoint, stack=stack)  # fmt: skip
        elif pending:
            _train_in_workers(
                config, pending, store, data_root, device_name, jobs, checkpoint, stack
            )
    finally:
        table = write_runs_csv(specs, store, out)
    _write_summary_and_figure(config, table, out)
    if failures:
        raise RunsFailed(failures, result=table)
    return table
