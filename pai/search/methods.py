"""Every method an experiment can name, as a `TicketSearch`.

A registered scorer (`pai.scorers` entry points, built-in or third-party) that implements
`find` is its own search (early-bird); any other scorer prunes at initialization through
`PruneAtInit`. `imp` is pai's own search, iterative magnitude pruning, and `transfer` a ticket
another method finds on another dataset or optimizer (`pai.search.transfer`).
"""

from __future__ import annotations

from pai.core.errors import unknown_name
from pai.report.schema import IMP, TRANSFER
from pai.search.protocol import TicketSearch


def method_names() -> list[str]:
    """Every method experiments accept: the registered scorers that loaded, `imp`, `transfer`."""
    from pai.pruning.registry import available_scorers

    return [*available_scorers(), IMP, TRANSFER]


def get_search(name: str) -> TicketSearch:
    """The search of method `name`; PaiError naming the methods otherwise."""
    from pai.pruning.registry import get_scorer, scorer_entries

    if name == IMP:
        from pai.search.imp_search import ImpSearch

        return ImpSearch()
    if name == TRANSFER:
        from pai.search.transfer import TransferSearch

        return TransferSearch(get_search)
    if name not in {entry.name for entry in scorer_entries()}:
        raise unknown_name("method", name, method_names())
    scorer = get_scorer(name)  # a broken plugin raises its own error here
    if isinstance(scorer, TicketSearch):
        return scorer
    from pai.search.prune_at_init import PruneAtInit

    return PruneAtInit(scorer)
