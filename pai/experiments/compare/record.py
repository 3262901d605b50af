"""A comparison run trained and recorded: its row of `runs.csv`, and the table of them all."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from pai.core.atomic import atomic_write_text
from pai.core.store import FILES, Contents, Run, canonical, file_problem
from pai.experiments.compare.config import RunSpec
from pai.experiments.compare.plan import run_for
from pai.experiments.compare.tickets import TicketFinder
from pai.pruning.masks import Masks
from pai.report.schema import DENSE, EXTRA_COLUMNS, RUN_COLUMNS
from pai.search.ticket import Ticket
from pai.training.loop import evaluate
from pai.training.record import TRAINED_CONTENTS, TrainingJob, copy_training

# What a complete comparison run must hold: its training, its mask and its row (every column
# the tables group and report by; columns added to rows since are read when present).
ROW_KEYS: tuple[str, ...] = (*RUN_COLUMNS, "requested_compression")
COMPARE_CONTENTS: Contents = {**TRAINED_CONTENTS, FILES.masks: (), FILES.row: ROW_KEYS}


def collapse_facts(model: nn.Module, masks: Masks) -> dict[str, Any]:
    """Effective compression and whether the masked network collapsed.

    Collapsed: some prunable layer kept no weight (`layer_collapse`) or no input-output path is
    left (`effective_masks` keeps nothing); either way the network computes a constant.
    """
    from pai.pruning.collapse import effective_masks, layer_collapse

    empty = layer_collapse(masks)
    effective = effective_masks(model, masks.to(next(model.parameters()).device))
    disconnected = effective.kept == 0
    return {
        "effective_compression": effective.compression,
        "collapsed": bool(empty) or disconnected,
        "collapsed_layers": ";".join(empty),
        "disconnected": disconnected,
    }


def ticket_job(
    spec: RunSpec,
    ticket: Ticket,
    finder: TicketFinder,
    run: Run,
    on_row: Callable[[dict[str, Any]], None],
) -> TrainingJob | None:
    """`ticket` made ready to train into `run`; its `finish` writes the run's row, finishes the
    run and passes the row to `on_row`. None when the ticket's training is stored already: it
    is copied and the row written here.

    `untrained_test_accuracy` is the test accuracy of the ticket's start weights (masked, or
    holding their frozen values) before any training: the supermask accuracy of its mask.
    """
    masks = ticket.masks.to("cpu")
    model = finder.build(spec)
    facts = collapse_facts(model, masks)
    model.load_state_dict(ticket.state)
    model.to(finder.context.device)
    untrained = evaluate(model, finder.context.data.test)[0]
    facts = {**facts, "untrained_test_accuracy": untrained}
    if ticket.trained is not None:
        metrics = copy_training(run, ticket.trained.path, masks)
        on_row(_finish_row(spec, ticket, masks, facts, metrics, run))
        return None
    return TrainingJob(
        run,
        model,
        spec.train,
        masks=None if spec.method == DENSE else masks.to(finder.context.device),
        frozen=ticket.frozen,
        finish=lambda result: on_row(_finish_row(spec, ticket, masks, facts, result.metrics, run)),
    )


def _finish_row(
    spec: RunSpec,
    ticket: Ticket,
    masks: Masks,
    facts: Mapping[str, Any],
    metrics: Mapping[str, Any],
    run: Run,
) -> dict[str, Any]:
    """The row of `spec`'s run, written into it, the run marked complete."""
    row = {
        "method": spec.method,
        "variant": spec.variant,
        "compression": masks.compression,
        "effective_compression": facts["effective_compression"],
        "seed": spec.seed,
        "test_accuracy": metrics["test_accuracy"],
        "best_test_accuracy": metrics["best_test_accuracy"],
        "collapsed": facts["collapsed"],
        "search_epochs": ticket.cost.epochs,
        "train_seconds": metrics["wall_seconds"],
        "requested_compression": spec.compression,
        "kept": masks.kept,
        "total": masks.total,
        "density": masks.density,
        "collapsed_layers": facts["collapsed_layers"],
        "disconnected": facts["disconnected"],
        "search_steps": ticket.cost.steps,
        "scoring_passes": ticket.cost.scoring_passes,
        "converged": ticket.converged,
        "train_epochs": metrics["epochs"],
        "train_steps": metrics["steps"],
        "test_loss": metrics["test_loss"],
        "initial_train_loss": metrics.get("initial_train_loss", math.nan),
        "reused_training": ticket.trained is not None,
        "options": json.dumps(canonical(spec.options or {}), sort_keys=True),
        "run_dir": run.path.name,
        "untrained_test_accuracy": facts["untrained_test_accuracy"],
    }
    run.write_json(FILES.row, row)
    run.finish()
    return row


def runs_table(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The tidy table: one row per run, the required columns first."""
    return pd.DataFrame(list(rows), columns=[*RUN_COLUMNS, *EXTRA_COLUMNS])


def collect_rows(specs: Iterable[RunSpec], store: Path) -> list[dict[str, Any]]:
    """The rows of the complete runs among `specs`, in plan order.

    A complete run whose `row.json` does not read back, or lacks a column of `ROW_KEYS`, is
    damaged: it is moved aside (`Run.quarantine`) and left out, to be trained again.
    """
    rows = []
    for spec in specs:
        run = run_for(spec, store)
        if run.complete:
            problem = file_problem(run.path / FILES.row, ROW_KEYS)
            if problem is None:
                rows.append(run.read_json(FILES.row))
            else:
                run.quarantine(problem)
    return rows


def write_runs_csv(specs: Iterable[RunSpec], store: Path, out: Path) -> pd.DataFrame:
    """(Re)build `out/runs.csv` atomically from the complete run directories."""
    table = runs_table(collect_rows(specs, store))
    atomic_write_text(out / "runs.csv", table.to_csv(index=False))
    return table
