"""Every method an experiment can name, as a `TicketSearch`.

A registered scorer (`pai.scorers` entry points, built-in or third-party) that implements
`find` is its own search (early-bird); any other scorer prunes at initialization through
`PruneAtInit`. `imp` is pai's own search, iterative magnitude pruning, and `transfer` a ticket
another method finds on another dataset or optimizer (`pai.search.transfer`).

The names and the options classes are read without importing any method (nor torch), so the
command line checks a name and shows a method's flags at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pai.core.errors import PaiError, unknown_name
from pai.core.plugins import OPTIONS, SCORERS, declared_names, in_process, load_declared
from pai.report.schema import IMP, TRANSFER

if TYPE_CHECKING:
    from pai.search.protocol import TicketSearch


def method_names() -> list[str]:
    """Every method experiments accept: the declared and in-process scorers, `imp`,
    `transfer` (a scorer that fails to load is named here and refused by `get_search`)."""
    return [*declared_names(SCORERS), IMP, TRANSFER]


def options_class(name: str) -> type | None:
    """The options dataclass of method `name` (its `TicketSearch.Options`): that of a method
    registered in this process, else the one the `pai.options` entry-point group declares (read
    without loading the method); None when there is none."""
    registered = in_process(SCORERS, name)
    if registered is not None:
        return getattr(registered, "Options", None)
    try:
        return load_declared(OPTIONS, name)
    except Exception as error:  # a broken declaration must not break the other methods
        raise PaiError(f"options of method {name!r} failed to load: {error}") from None


def get_search(name: str) -> TicketSearch:
    """The search of method `name`; PaiError naming the methods otherwise."""
    from pai.pruning.registry import get_scorer
    from pai.search.protocol import TicketSearch

    if name == IMP:
        from pai.search.imp_search import ImpSearch

        return ImpSearch()
    if name == TRANSFER:
        from pai.search.transfer import TransferSearch

        return TransferSearch(get_search)
    if name not in method_names():
        raise unknown_name("method", name, method_names())
    scorer = get_scorer(name)  # a broken plugin raises its own error here
    if isinstance(scorer, TicketSearch):
        return scorer
    from pai.search.prune_at_init import PruneAtInit

    return PruneAtInit(scorer)
