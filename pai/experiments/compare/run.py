"""Running a comparison: train what is not yet complete, rebuild the tables and the figure.

Runs train in this process in plan order, or (`jobs` > 1) one seed per worker process through
joblib (`prefer="processes"`, so a caller's `joblib.parallel_config` chooses the backend).
`runs.csv` is rebuilt from the store after every run, so an interruption loses only the run in
progress.
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
from pai.experiments.compare.record import train_ticket, write_runs_csv
from pai.experiments.compare.tickets import TicketFinder

log = logging.getLogger(__name__)


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
    from pai.data.loading import load_for_training

    show = sys.stderr.isatty() if progress is None else progress
    device = resolve_device(device)
    data = load_for_training(
        config.dataset, root=data_root, device=device, train_per_class=config.train_per_class
    )
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
            Parallel(n_jobs=workers, prefer="processes")(
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
