"""IMP over several seeds, in this process or as a graph of tasks on a dask.distributed cluster.

Each seed is its own IMP run (`pai.search.imp`, model seed s). In this process the seeds'
levels train in lockstep, level L of every seed in one stacked loop (`pai.search.imp_lockstep`),
unless the stack size is 1 (then seed after seed). On a cluster every level and
every control is a task (`pai.experiments.executors`): level L after level L - 1 of its seed,
a control after the level whose mask it ablates; the seeds' chains run side by side. Levels
and controls already complete in the store are not submitted; workers write the store, and
the client reads each seed's levels back (and writes its levels.csv) when the graph is done.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pai.core.store import FILES, canonical
from pai.experiments.executors import RunsFailed, Task, check_stack_request, run_tasks
from pai.search.imp import ImpConfig, ImpResult, ImpRun, imp_data, run_imp
from pai.training.checkpoint import DEFAULT_POLICY, CheckpointPolicy


def seed_configs(config: ImpConfig, seeds: Sequence[int]) -> list[ImpConfig]:
    """`config` once per seed, each its own IMP run: seed s initializes the model and orders
    the data (as `pai imp --seed s` does)."""
    return [
        dataclasses.replace(config, model_seed=seed, train=config.train.replace(seed=seed))
        for seed in seeds
    ]


def run_imp_seeds(
    config: ImpConfig,
    seeds: Sequence[int],
    out: str | Path,
    *,
    data_root: str | Path | None = None,
    device: torch.device | str | None = None,
    progress: bool | None = None,
    checkpoint: CheckpointPolicy | None = DEFAULT_POLICY,
    scheduler: str | None = None,
    stack: int | None = None,
) -> list[ImpResult]:
    """Run (or resume) the IMP run of every seed in `seeds`; their results, in seed order.

    Without `scheduler` the seeds run in this process: level by level in stacks of up to
    `stack` runs (None: the device's default), or with `stack` 1 one seed after the other
    (`run_imp`, whose levels checkpoint as they train). With `scheduler`, one task per level
    and control runs on that cluster (`local:N`, an address, a scheduler file), and `stack`
    must be None or 1; runs that fail are reported by `RunsFailed` (its `result`: the results
    of the seeds that finished) once the others are done.
    """
    check_stack_request(stack, scheduler)
    configs = seed_configs(config, seeds)
    if scheduler is None and stack != 1 and len(configs) > 1:
        return _run_in_lockstep(configs, out, data_root, device, progress, checkpoint, stack)
    if scheduler is None:
        return [
            run_imp(
                c,
                out,
                data_root=data_root,
                device=device,
                progress=progress,
                checkpoint=checkpoint,
            )
            for c in configs
        ]
    from pai.data.loading import load_for_training
    from pai.experiments.executors import check_scheduler

    check_scheduler(scheduler)
    device = None if device is None else str(device)  # the workers' to resolve
    data = load_for_training(  # on the CPU, to plan with: the client trains nothing
        config.dataset, root=data_root, device="cpu", train_per_class=config.train_per_class
    )
    tasks = []
    for c in configs:
        tasks += imp_tasks(
            ImpRun(c, out, data, checkpoint=None), out, data_root, device, checkpoint
        )
    failures = run_tasks(tasks, scheduler, on_done=_report(len(tasks)), progress=progress)
    failed = {failure.task.args[0] for failure in failures}
    results = [ImpRun(c, out, data, checkpoint=None).run() for c in configs if c not in failed]
    if failures:
        raise RunsFailed(failures, result=results)
    return results


def _run_in_lockstep(
    configs: Sequence[ImpConfig],
    out: str | Path,
    data_root: str | Path | None,
    device: torch.device | str | None,
    progress: bool | None,
    checkpoint: CheckpointPolicy | None,
    stack: int | None,
) -> list[ImpResult]:
    """The IMP runs of `configs` (one per seed) trained level by level in stacks, then read."""
    from pai.search.imp_lockstep import train_in_lockstep

    data = imp_data(configs[0], None, data_root, device)
    runs = [ImpRun(c, out, data, progress, checkpoint) for c in configs]
    train_in_lockstep(runs, stack_size=stack)
    return [run.run() for run in runs]


def imp_tasks(
    run: ImpRun,
    out: str | Path,
    data_root: str | Path | None,
    device: str | None,
    checkpoint: CheckpointPolicy | None,
) -> list[Task]:
    """The tasks of `run`'s levels and controls that are not complete, each after what it
    needs (the level before; a control's level)."""
    common = (out, data_root, device, checkpoint)
    identity = json.dumps(canonical(run.config.identity()), sort_keys=True)
    seed = run.config.model_seed
    tasks: dict[str, Task] = {}

    def key(level: int, control: str | None = None) -> str:
        return f"{run.root.name}/{run.level_run(level, control).path.name}"

    for level in range(len(run.plan)):
        if not (run.level_run(level).path / FILES.marker).is_file():
            after = tuple(k for k in [key(level - 1)] if level > 0 and k in tasks)
            arguments = (run.config, level, *common)
            label = f"imp seed {seed} level {level}"
            tasks[key(level)] = Task(key(level), level_task, arguments, after, label, identity)
        for control in run.config.controls if level > 0 else ():
            if (run.level_run(level, control).path / FILES.marker).is_file():
                continue
            after = tuple(k for k in [key(level)] if k in tasks)
            arguments = (run.config, level, control, *common)
            label = f"imp seed {seed} level {level} {control}"
            tasks[key(level, control)] = Task(
                key(level, control), control_task, arguments, after, label, identity
            )
    return list(tasks.values())


def _report(count: int):
    import sys

    from tqdm.auto import tqdm

    done = []

    def report(task: Task, result: dict[str, Any]) -> None:
        done.append(task.key)
        state = "trained" if result["trained"] else "found complete (computed by another process)"
        tqdm.write(f"[{len(done)}/{count}] {task.label}: {state}", file=sys.stderr)

    return report


# One IMP run per worker process and config: its data on the device, its plan and model.
_RUNS: dict[tuple, ImpRun] = {}


def _imp_run(
    config: ImpConfig,
    out: str | Path,
    data_root: str | Path | None,
    device: str | None,
    checkpoint: CheckpointPolicy | None,
) -> ImpRun:
    from pai.core.devices import resolve_device
    from pai.data.loading import load_for_training

    key = (config, str(out), str(data_root), device, checkpoint)
    if key not in _RUNS:
        if len(_RUNS) > 8:  # a worker keeps a few seeds' runs, not a whole sweep's
            _RUNS.clear()
        data = load_for_training(
            config.dataset,
            root=data_root,
            device=resolve_device(device),
            train_per_class=config.train_per_class,
        )
        _RUNS[key] = ImpRun(config, out, data, progress=False, checkpoint=checkpoint)
    return _RUNS[key]


def level_task(
    config: ImpConfig,
    level: int,
    out: str | Path,
    data_root: str | Path | None,
    device: str | None,
    checkpoint: CheckpointPolicy | None,
) -> dict[str, Any]:
    """Task: train IMP level `level` of `config` (unless complete; the level before is)."""
    return {"trained": _imp_run(config, out, data_root, device, checkpoint).train_level(level)}


def control_task(
    config: ImpConfig,
    level: int,
    control: str,
    out: str | Path,
    data_root: str | Path | None,
    device: str | None,
    checkpoint: CheckpointPolicy | None,
) -> dict[str, Any]:
    """Task: train `control` of IMP level `level` of `config` (unless complete)."""
    run = _imp_run(config, out, data_root, device, checkpoint)
    return {"trained": run.train_control(level, control)}
