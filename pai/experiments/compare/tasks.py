"""A comparison as a graph of tasks, one per stored run, for `pai.experiments.executors`.

Every run not yet complete becomes a task: each ticket trained (`run_task`) and each stage a
method stores on the way to its tickets (`stage_task`: IMP's levels). A task runs after the
tasks whose runs it reads: a stage after the stage before it (IMP level L after level L - 1), a
ticket after the stage it is drawn from (an IMP ticket after its level), the dense reference
after the stage whose training it reuses (IMP's level 0), and a `shuffle` or `reinit` row after
the original run it ablates. Everything else may start as soon as a worker is free.

Tasks carry only configs, paths and names; a worker loads the data and builds the ticket
finder itself, once per process (`_finder`), and claims each run before computing it
(`compute_run`), so a run given to two workers, or to two sweeps, is computed once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from pai.core.store import FILES, canonical, config_hash
from pai.experiments.compare.config import CompareConfig, RunSpec
from pai.experiments.compare.plan import run_for
from pai.experiments.compare.record import COMPARE_CONTENTS, ticket_job
from pai.experiments.compare.tickets import TicketFinder
from pai.experiments.executors import Task
from pai.report.schema import DENSE, ORIGINAL
from pai.search.protocol import SearchStage
from pai.training.checkpoint import CheckpointPolicy
from pai.training.record import train_jobs

log = logging.getLogger(__name__)

# Variants made from their original's ticket (the others are searches of their own).
ABLATED: tuple[str, ...] = ("shuffle", "reinit")


def compute_run(spec: RunSpec, finder: TicketFinder, store: Path) -> tuple[dict[str, Any], bool]:
    """The row of `spec`'s run and whether it was trained now (False: found complete)."""
    return compute_runs([spec], finder, store, stack_size=1)[0]


def compute_runs(
    specs: Sequence[RunSpec], finder: TicketFinder, store: Path, *, stack_size: int | None
) -> list[tuple[dict[str, Any], bool]]:
    """The row of each of `specs`' runs and whether it was trained now (False: found
    complete), those to train trained side by side in stacks of up to `stack_size` runs
    (None: the device's default; `pai.training.record.train_jobs`).

    Each run is claimed (`Run.claim`) before its ticket is found and looked at again once
    claimed: another process may have finished it meanwhile. The claims are held until the
    stack ends; each run is complete as soon as its stack ends.
    """
    results: dict[int, tuple[dict[str, Any], bool]] = {}
    jobs = []
    with ExitStack() as claims:
        for index, spec in enumerate(specs):
            run = run_for(spec, store)
            if run.verified(COMPARE_CONTENTS):
                results[index] = (run.read_json(FILES.row), False)
                continue
            claims.enter_context(run.claim())
            if run.verified(COMPARE_CONTENTS):  # finished by another process meanwhile
                results[index] = (run.read_json(FILES.row), False)
                continue

            def on_row(row: dict[str, Any], index: int = index) -> None:
                results[index] = (row, True)

            job = ticket_job(spec, finder.find(spec), finder, run, on_row)
            jobs += [job] if job is not None else []
        context = finder.context
        train_jobs(
            jobs,
            context.data,
            progress=context.progress,
            checkpoint=context.checkpoint,
            stack_size=stack_size,
        )
    return [results[index] for index in range(len(specs))]


# One ticket finder per worker process: its dataset on the device and its caches (scoring
# batches, originals, IMP runs) serve every task of the same sweep that lands there.
_FINDERS: dict[tuple, TicketFinder] = {}


def _finder(
    config: CompareConfig,
    store: Path,
    data_root: str | Path | None,
    device: str | None,
    checkpoint: CheckpointPolicy | None,
) -> TicketFinder:
    from pai.core.devices import resolve_device
    from pai.data.loading import load_for_training

    key = (config_hash(config), str(store), str(data_root), device, checkpoint)
    if key not in _FINDERS:
        _FINDERS.clear()  # one sweep at a time per process
        resolved = resolve_device(device)
        data = load_for_training(
            config.dataset, root=data_root, device=resolved, train_per_class=config.train_per_class
        )
        _FINDERS[key] = TicketFinder(
            config, data, store, device=resolved, progress=False, checkpoint=checkpoint
        )
    return _FINDERS[key]


def run_task(
    config: CompareConfig,
    spec: RunSpec,
    store: Path,
    data_root: str | Path | None,
    device: str | None,
    checkpoint: CheckpointPolicy | None,
) -> dict[str, Any]:
    """Task: train `spec`'s ticket into its run (unless complete); its row and `trained`."""
    finder = _finder(config, store, data_root, device, checkpoint)
    row, trained = compute_run(spec, finder, store)
    return {"row": row, "trained": trained}


def stage_task(
    config: CompareConfig,
    method: str,
    spec: RunSpec,
    key: str,
    dense: bool,
    store: Path,
    data_root: str | Path | None,
    device: str | None,
    checkpoint: CheckpointPolicy | None,
) -> dict[str, Any]:
    """Task: compute the stage `key` of `method`'s search for `spec` (unless complete)."""
    finder = _finder(config, store, data_root, device, checkpoint)
    search, _ = finder.searches[method]
    request = finder.request(spec, method)
    stage = next(s for s in search.stages(request, finder.context, dense=dense) if s.key == key)
    return {"trained": search.compute_stage(stage, request, finder.context)}


def _stages(finder: TicketFinder, spec: RunSpec) -> list[tuple[str, SearchStage, bool]]:
    """(method, stage, dense) of every stage `spec`'s ticket reads, needed ones first."""
    if spec.method == DENSE:
        found = []
        for method, (search, _) in finder.searches.items():
            request = finder.request(spec, method)
            found += [(method, s, True) for s in search.stages(request, finder.context, dense=True)]
        return found
    search, _ = finder.searches[spec.method]
    if spec.variant == "invert":
        search = search.inverted()
    request = finder.request(spec)
    return [(spec.method, s, False) for s in search.stages(request, finder.context)]


def sweep_tasks(
    config: CompareConfig,
    pending: list[RunSpec],
    store: Path,
    finder: TicketFinder,
    *,
    data_root: str | Path | None,
    device: str | None,
    checkpoint: CheckpointPolicy | None,
) -> list[Task]:
    """The tasks of the `pending` runs (plan order) and of the incomplete stages they read.

    `finder` is the client's (its data on the CPU, to plan with: it trains nothing here).
    """
    common = (store, data_root, device, checkpoint)
    tasks: dict[str, Task] = {}
    pending_keys = {run_for(spec, store).path.name for spec in pending}
    for spec in pending:
        after = []
        read: dict[str, str] = {}  # method -> the stage its ticket reads (the last listed)
        for method, stage, dense in _stages(finder, spec):
            read[method] = stage.key
            if (stage.path / FILES.marker).is_file():
                continue
            if stage.key not in tasks:
                needed = tuple(k for k in stage.after if k in tasks)
                label = f"{method} {stage.path.name} seed {spec.seed}"
                arguments = (config, method, spec, stage.key, dense, *common)
                tasks[stage.key] = Task(stage.key, stage_task, arguments, needed, label, stage.key)
        after += [key for key in read.values() if key in tasks]  # the rest come before it
        if spec.variant in ABLATED:
            original = run_for(dataclasses.replace(spec, variant=ORIGINAL), store).path.name
            if original in pending_keys:
                after.append(original)
        key = run_for(spec, store).path.name
        identity = json.dumps(canonical(spec), sort_keys=True)
        arguments = (config, spec, *common)
        tasks[key] = Task(
            key, run_task, arguments, tuple(dict.fromkeys(after)), spec.label, identity
        )
    return list(tasks.values())
