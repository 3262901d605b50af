"""The comparison harness: every method's ticket trained under one budget, one row per run.

For every seed, method, compression and variant the harness finds a ticket through the
method's `TicketSearch` (mask, start weights, search cost), trains it with the same
`TrainConfig` (same budget, same data order for a seed), evaluates it and stores the run in its
own directory, keyed by the hash of its full config; a dense run per seed is the reference.
Sanity checks (Frankle et al. 2021) add rows whose `variant` names them (`shuffle`, `reinit`,
`invert`); plain rows have variant `original`.

The experiment is four steps, one module each: `config` (what is compared), `plan` (every run,
before anything trains), `tickets` (each run's ticket), `record` (train, write the run and its
row) and `run` (the loop and the tables).
"""

from __future__ import annotations

import importlib
from typing import Any

# Exported name -> its module, imported on first use: `config` imports no torch, so the command
# line checks a comparison's config before loading the rest.
_EXPORTS: dict[str, str] = {
    "CompareConfig": "config",
    "RunSpec": "config",
    "plan_runs": "plan",
    "run_for": "plan",
    "collapse_facts": "record",
    "runs_table": "record",
    "write_runs_csv": "record",
    "run_comparison": "run",
    "train_runs": "run",
    "TicketFinder": "tickets",
    "find_ticket": "tickets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
