"""The names a results table speaks: method and variant names and the column order of a run.

Tables and figures are rebuilt from `runs.csv` by this package alone, so the names they group
and colour by live here, below the harness that writes them.
"""

from __future__ import annotations

IMP = "imp"
DENSE = "dense"
ORIGINAL = "original"
# The variants of a ticket that test what its method found (Frankle et al. 2021).
SANITY_CHECKS: tuple[str, ...] = ("shuffle", "reinit", "invert")
# The columns every run records, in this order; extra columns follow them.
RUN_COLUMNS: tuple[str, ...] = (
    "method",
    "variant",
    "compression",
    "effective_compression",
    "seed",
    "test_accuracy",
    "best_test_accuracy",
    "collapsed",
    "search_epochs",
    "train_seconds",
)
EXTRA_COLUMNS: tuple[str, ...] = (
    "requested_compression",
    "kept",
    "total",
    "density",
    "collapsed_layers",
    "disconnected",
    "search_steps",
    "scoring_passes",
    "converged",
    "train_epochs",
    "train_steps",
    "test_loss",
    "initial_train_loss",
    "reused_training",
    "options",
    "run_dir",
)
