"""Ticket transfer (Morcos, Yu, Paganini & Tian 2019, "One ticket to win them all").

A ticket found on a source (another dataset, another optimizer, or both) is trained on the
target: the method `method` finds its ticket for the same model, compression and seed on
`dataset` under the target's training with `optimizer` and `lr` replaced where given; the
ticket keeps that mask and those start weights, except for the output layer (the last masked
parameter and the other parameters of its module), which is re-initialized with the target
seed's initialization and left unpruned, as the paper does. Its true compression is therefore
a little below the requested one. The search cost is the source search's.

In a comparison this stands beside the target's own ticket of the same method (`--methods
imp,transfer`) and beside the `shuffle` variant of the transferred ticket, a random mask with
the same layerwise densities.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from pai.core.errors import PaiError
from pai.pruning.masks import Masks
from pai.report.schema import TRANSFER
from pai.search.options import TransferOptions
from pai.search.protocol import SearchContext, SearchIdentity, SearchRequest, TicketSearch
from pai.search.ticket import Ticket


class TransferSearch(TicketSearch):
    """The ticket another method finds on a source, its output layer re-initialized and dense.

    `resolve` maps a method name to its search (`pai.search.methods.get_search`).
    """

    name = TRANSFER
    description = "a ticket found on another dataset or optimizer, its output layer re-initialized"
    needs_data = True
    Options = TransferOptions

    def __init__(self, resolve: Callable[[str], TicketSearch]):
        self.resolve = resolve

    def source(self, request: SearchRequest) -> tuple[TicketSearch, SearchRequest]:
        """The source method's search and what it is asked for."""
        options = request.options or TransferOptions()
        search = self.resolve(options.method)
        changes = {}
        if options.optimizer is not None:
            changes["optimizer"] = options.optimizer
        if options.lr is not None:
            changes["lr"] = options.lr
        source = dataclasses.replace(
            request,
            dataset=options.dataset or request.dataset,
            train=request.train.replace(**changes) if changes else request.train,
            options=search.options_for(None),
        )
        return search, source

    def identity(self, request: SearchRequest) -> SearchIdentity:
        options = request.options or TransferOptions()
        search, source = self.source(request)
        found = search.identity(source)
        return SearchIdentity(
            {
                **dataclasses.asdict(options),
                "source_train": source.train,
                "source": found.options,
                "source_per_class": found.per_class,
            },
            per_class=found.per_class,
        )

    def find(self, request: SearchRequest, context: SearchContext) -> Ticket:
        search, source = self.source(request)
        found = search.find(source, self._source_context(source, context))
        return transplant(found, context.build(request))

    @staticmethod
    def _source_context(source: SearchRequest, context: SearchContext) -> SearchContext:
        """A context on the source dataset (loaded once per experiment), with its own cache and
        its runs under `<store>/transfer/<dataset>`."""
        if source.dataset == context.data.spec.name:
            data = context.data
        else:
            key = ("transfer data", source.dataset, source.train_per_class)
            if key not in context.cache:
                from pai.data.loading import load_for_training

                context.cache[key] = load_for_training(
                    source.dataset,
                    root=context.data.root,
                    device=context.device,
                    train_per_class=source.train_per_class,
                )
            data = context.cache[key]
        key = ("transfer context", source.dataset, source.train)
        if key not in context.cache:
            store = context.store / TRANSFER / source.dataset
            context.cache[key] = SearchContext(data, context.device, store, context.progress)
        return context.cache[key]


def output_layer(masks: Masks) -> str:
    """The module name of the output layer: that of the last masked parameter (`fc`)."""
    return list(masks)[-1].rpartition(".")[0]


def transplant(ticket: Ticket, target: torch.nn.Module) -> Ticket:
    """`ticket` with its output layer's parameters taken from `target` (its initialization),
    that layer's mask all ones; PaiError when another tensor's shape differs."""
    layer = output_layer(ticket.masks)
    initial = {k: v.detach().cpu() for k, v in target.state_dict().items()}

    def moved(state: dict) -> dict:
        out = {}
        for key, value in state.items():
            if key.startswith(layer + "."):
                out[key] = initial[key].clone()
            elif tuple(value.shape) != tuple(initial[key].shape):
                raise PaiError(
                    f"the source ticket's {key!r} has shape {tuple(value.shape)}, the target "
                    f"model's {tuple(initial[key].shape)}: only the output layer may differ"
                )
            else:
                out[key] = value.detach().cpu().clone()
        return out

    masks = Masks(
        {
            name: torch.ones(initial[name].shape, dtype=torch.bool)
            if name.startswith(layer + ".")
            else mask.cpu()
            for name, mask in ticket.masks.items()
        }
    )
    state = moved(ticket.state)
    source = moved(ticket.source_state) if ticket.source_state is not None else None
    return Ticket(masks, state, ticket.cost, source_state=source)
