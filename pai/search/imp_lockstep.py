"""IMP runs of several seeds trained side by side, level by level, in stacked loops.

The IMP runs of an experiment's seeds share their model, dataset and budget, so level L of
every seed can share one training loop (`pai.training.record.train_jobs`, stacked by
`pai.training.stacked.train_many`), each exactly as alone. Level L of a seed needs level L - 1
of that seed only, and the controls of level L - 1 need that level only, so the controls of
level L - 1 join the stack of level L. Every level and control is still its own stored run,
claimed while it trains and marked complete as soon as its stack ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack

from pai.core.errors import PaiError
from pai.search.imp import ImpRun
from pai.training.record import TrainingJob, train_jobs


def train_in_lockstep(
    runs: Sequence[ImpRun], *, until: Sequence[int] | None = None, stack_size: int | None = None
) -> int:
    """Train every level (up to `until[i]` for run i; default: the last) and every control of
    `runs` that is not complete, level L of all runs in one stack with the controls of level
    L - 1; how many runs were trained. The runs must share their data (one loaded dataset).
    `stack_size` bounds a stack (None: the device's default; 1: one run at a time).
    """
    if not runs:
        return 0
    if any(run.data is not runs[0].data for run in runs):
        raise PaiError("IMP runs trained in lockstep must share one loaded dataset")
    lasts = [len(run.plan) - 1 for run in runs] if until is None else list(until)
    if len(lasts) != len(runs):
        raise PaiError(f"got {len(runs)} IMP runs and {len(lasts)} last levels; give one per run")
    trained = 0
    for level in range(max(lasts) + 2):
        with ExitStack() as claims:
            jobs: list[TrainingJob] = []
            for run, last in zip(runs, lasts, strict=True):
                if level <= last:
                    job = run.level_job(level, claims)
                    jobs += [job] if job is not None else []
                if 0 < level - 1 <= last:
                    for control in run.config.controls:
                        job = run.control_job(level - 1, control, claims)
                        jobs += [job] if job is not None else []
            train_jobs(
                jobs,
                runs[0].data,
                progress=runs[0].progress,
                checkpoint=runs[0].checkpoint,
                stack_size=stack_size,
            )
            trained += len(jobs)
    return trained
