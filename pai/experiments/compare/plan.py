"""Every run of a comparison, planned before anything trains."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pai.core import seeds
from pai.core.store import Run
from pai.experiments.compare.config import CompareConfig, RunSpec
from pai.pruning.masks import SCOPES
from pai.report.schema import DENSE, ORIGINAL
from pai.search.protocol import TicketSearch

log = logging.getLogger(__name__)


def searches_of(config: CompareConfig) -> dict[str, tuple[TicketSearch, Any]]:
    """Each method's search and its resolved options (`TicketSearch.options_for`)."""
    from pai.search.methods import get_search

    found = {}
    for method in config.methods:
        search = get_search(method)
        found[method] = (search, search.options_for(config.options.get(method)))
    return found


def scope_identity(scope: str) -> str:
    """What a run records of its scope: the name, or an allocator's identity (`from-masks`
    records a digest of the file's layer counts, not its path)."""
    if scope in SCOPES:
        return scope
    from pai.pruning.allocators import resolve_allocator

    return resolve_allocator(scope).identity


def plan_runs(config: CompareConfig) -> list[RunSpec]:
    """Every run of the comparison, in the order they are trained: per seed, the dense run, then
    each method at each compression, the original ticket before its sanity checks.

    `invert` applies only to searches that have an inverted counterpart (`inverted()`); for the
    others (methods that train to find their mask) it is skipped with one log line.
    """
    searches = searches_of(config)
    scope = scope_identity(config.scope)
    specs = []
    skipped = set()
    for seed in config.seeds:
        common = dict(
            seed=seed,
            model=config.model,
            dataset=config.dataset,
            train=config.train.replace(seed=seeds.data_order(seed)),
            train_per_class=config.train_per_class,
        )
        specs.append(RunSpec(DENSE, ORIGINAL, 1.0, **common))
        for method, (search, options) in searches.items():
            for compression in config.compressions:
                identity = search.identity(config.request(options, compression, seed))
                for variant in (ORIGINAL, *config.sanity):
                    if variant == "invert" and search.inverted() is None:
                        skipped.add(method)
                        continue
                    specs.append(
                        RunSpec(
                            method,
                            variant,
                            float(compression),
                            scope=scope,
                            per_class=identity.per_class,
                            options=identity.options,
                            **common,
                        )
                    )
    for method in sorted(skipped):
        log.warning(
            "sanity check 'invert' skipped for %s: it trains to find its mask, and keeping its "
            "smallest trained weights is a different search, not an inversion of a score",
            method,
        )
    return specs


def run_for(spec: RunSpec, store: str | Path) -> Run:
    """The run directory of `spec` in `store`: `<store>/<method>-<variant>-<hash>/` (a `:` of
    the variant, as in noise:0.5, written `_`)."""
    return Run(store, f"{spec.method}-{spec.variant.replace(':', '_')}", spec)
