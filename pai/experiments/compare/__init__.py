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

from pai.experiments.compare.config import CompareConfig, RunSpec
from pai.experiments.compare.plan import plan_runs, run_for
from pai.experiments.compare.record import collapse_facts, runs_table, write_runs_csv
from pai.experiments.compare.run import run_comparison, train_runs
from pai.experiments.compare.tickets import TicketFinder, find_ticket

__all__ = [
    "CompareConfig",
    "RunSpec",
    "TicketFinder",
    "collapse_facts",
    "find_ticket",
    "plan_runs",
    "run_comparison",
    "run_for",
    "runs_table",
    "train_runs",
    "write_runs_csv",
]
