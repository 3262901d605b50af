"""Early-bird tickets (You et al. 2020, "Drawing Early-Bird Tickets"): masks found early in training.

The mask a network would be pruned to stops changing long before training ends. Early-bird
trains the dense network, draws the mask at the target compression after every epoch, and stops
as soon as the recent masks agree; the ticket is that mask, found after a few epochs instead of
a full training. It needs training, so `pai.prune` rejects it; it is a ticket search
(`pai.search.protocol.TicketSearch`): experiments call its `find` (see `scorers/README.md`).

The stopping rule, exactly: after epoch e the mask m_e is drawn. The last `window` (5) masks are
kept. Once `window` masks exist, `window - 1` normalized Hamming distances are computed and
training stops at the end of epoch e when the largest of them is below `epsilon` (default 0.1).
Which distances is the `distance` option: `successive` (the default) takes those between
successive masks, d(m_{e-4}, m_{e-3}), ..., d(m_{e-1}, m_e); `newest` takes those from each older
mask to the newest, d(m_{e-4}, m_e), ..., d(m_{e-1}, m_e), as the reference implementation does
(its `cal_dist`; it stops at distances <= 0.1, and never stops training). The normalized Hamming
distance is the fraction of prunable weights kept by one mask and pruned by the other. By the
triangle inequality `newest` is the stricter rule: masks that drift a little every epoch pass
`successive` while the newest may differ from the oldest by the sum of the drifts. Here the
training loop really stops.
"""

from __future__ import annotations

import copy
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from pai.core.errors import PaiError, unknown_name
from pai.pruning.allocators import keep_allocated
from pai.pruning.masks import Masks, Scope, kept_count, prunable_parameters
from pai.pruning.registry import Scorer, ScoringContext
from pai.search.protocol import SearchContext, SearchRequest, TicketSearch
from pai.search.ticket import SearchCost, Ticket
from pai.training.config import TrainConfig
from pai.training.loop import state_copy, train
from scorers.earlybird_options import (
    DISTANCES,
    EPSILON,
    WINDOW,
    EarlyBirdOptions,
)

log = logging.getLogger(__name__)


def mask_distance(first: Masks, second: Masks) -> float:
    """The normalized Hamming distance: the fraction of prunable weights where the masks differ."""
    if list(first) != list(second):
        raise PaiError(
            f"cannot compare masks over different layers: {list(first)} and {list(second)}"
        )
    differ = sum(int((first[name] != second[name].to(first[name].device)).sum()) for name in first)
    return differ / first.total


def successive_distances(history: Sequence[Masks], window: int = WINDOW) -> list[float]:
    """The distances between successive masks among the last `window` of `history`."""
    recent = list(history)[-window:]
    return [mask_distance(a, b) for a, b in zip(recent, recent[1:], strict=False)]


def newest_distances(history: Sequence[Masks], window: int = WINDOW) -> list[float]:
    """The distances from each older mask among the last `window` of `history` to the newest,
    oldest first (the reference implementation's rule)."""
    recent = list(history)[-window:]
    return [mask_distance(older, recent[-1]) for older in recent[:-1]]


def recent_distances(
    history: Sequence[Masks], window: int = WINDOW, distance: str | None = None
) -> list[float]:
    """The distances the stopping rule looks at: `successive` (None) or `newest` ones."""
    if distance not in (None, *DISTANCES):
        raise unknown_name("early-bird distance", distance, DISTANCES)
    if distance == "newest":
        return newest_distances(history, window)
    return successive_distances(history, window)


def should_stop(
    history: Sequence[Masks],
    epsilon: float = EPSILON,
    window: int = WINDOW,
    distance: str | None = None,
) -> bool:
    """True when `window` masks exist and the largest of the `window - 1` distances of the rule
    `distance` (`successive`, the default, or `newest`) among the last `window` is below
    `epsilon` (the rule of the module docstring).
    """
    if len(history) < window:
        return False
    return max(recent_distances(history, window, distance)) < epsilon


def magnitude_mask(model: nn.Module, compression: float, scope: Scope = "global") -> Masks:
    """Keep the largest |w| of the prunable weights: exactly `kept_count(total, compression)`."""
    scores = {name: p.detach().abs() for name, p in prunable_parameters(model).items()}
    return keep_allocated(scores, compression, scope)


def bn_channel_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv weight name, BatchNorm module name) for every conv whose output a BatchNorm scales.

    A `BatchNorm2d` registered right after a `Conv2d` (in `named_modules` order, no other layer
    between) with as many features as the conv has output channels is taken to normalize that
    conv's output: true of every conv + BatchNorm network of the zoo (VGG, ResNet shortcuts
    included).
    """
    pairs = []
    previous: tuple[str, nn.Module] | None = None
    for name, module in model.named_modules():
        if list(module.children()):
            continue  # containers: only layers count as neighbours
        if (
            isinstance(module, nn.BatchNorm2d)
            and previous is not None
            and isinstance(previous[1], nn.Conv2d)
            and previous[1].out_channels == module.num_features
        ):
            pairs.append((f"{previous[0]}.weight", name))
        previous = (name, module)
    return pairs


def bn_channel_mask(model: nn.Module, compression: float) -> Masks:
    """The channel mask of network slimming, as early-bird uses it (You et al. 2020, Sec. 3).

    Every output channel c of a conv followed by a BatchNorm (see `bn_channel_pairs`) scores
    |gamma_c|, the BatchNorm scale of that channel. Channels are pruned whole (all the weights
    W[c, :, :, :] of the conv) in ascending order of |gamma| over the whole network (ties: the
    earlier layer, then the lower channel index, first), until at most
    `kept_count(total, compression)` prunable weights are kept; layers without a BatchNorm (the
    classifier) stay dense. The true compression is therefore at least the target, and can
    exceed it by less than one channel's weights.
    """
    params = prunable_parameters(model)
    pairs = bn_channel_pairs(model)
    if not pairs:
        raise PaiError(
            f"bn-channel mode needs Conv2d layers followed by BatchNorm2d; "
            f"{type(model).__name__} has none; use mode='magnitude'"
        )
    total = sum(p.numel() for p in params.values())
    target = kept_count(total, compression)
    gammas, sizes, owners = [], [], []
    for index, (weight_name, bn_name) in enumerate(pairs):
        weight = params[weight_name]
        gammas.append(model.get_submodule(bn_name).weight.detach().abs().double().cpu())
        sizes.append(torch.full((weight.shape[0],), weight[0].numel(), dtype=torch.int64))
        owners.append(torch.full((weight.shape[0],), index, dtype=torch.int64))
    gamma, size, owner = torch.cat(gammas), torch.cat(sizes), torch.cat(owners)
    channel = torch.cat([torch.arange(len(g)) for g in gammas])
    order = torch.sort(gamma, stable=True).indices  # ascending; stable keeps position order
    kept_after = total - torch.cumsum(size[order], 0)  # kept weights after pruning a prefix
    reachable = kept_after <= target
    if not bool(reachable.any()):
        largest = total / int(kept_after[-1])
        raise PaiError(
            f"bn-channel mode cannot reach compression {compression:g}: pruning every channel "
            f"of every conv followed by BatchNorm still keeps {int(kept_after[-1])} weights "
            f"(compression {largest:.4g}); allowed: up to {largest:.4g}"
        )
    pruned = order[: int(reachable.nonzero()[0]) + 1]
    masks = {
        name: torch.ones(p.shape, dtype=torch.bool, device=p.device) for name, p in params.items()
    }
    for index in pruned.tolist():
        masks[pairs[int(owner[index])][0]][int(channel[index])] = False
    return Masks(masks)


@dataclass
class EarlyBirdTicket(Ticket):
    """An early-bird ticket, with the distances between the masks it drew.

    `distances[i]` is d(m_i, m_{i+1}) between the masks drawn after epochs i + 1 and i + 2;
    `converged` says whether the stopping rule fired.
    """

    distances: list[float] = field(default_factory=list)


def _draw(model: nn.Module, compression: float, scope: Scope, mode: str) -> Masks:
    if mode == "bn-channel":
        return bn_channel_mask(model, compression)
    return magnitude_mask(model, compression, scope)


class EarlyBirdScorer(Scorer, TicketSearch):
    """Early-bird tickets (You et al. 2020): the training-time mask, taken once it stops changing.

    `score` is the criterion each epoch's mask ranks by, |w| of the current weights; the ticket
    itself comes from `find` (the ticket-search protocol), which trains.
    """

    name = "earlybird"
    needs_data = True
    needs_training = True
    default_rounds = 1
    description = "magnitude mask drawn during dense training, stopped when masks stop changing"
    Options = EarlyBirdOptions

    def score(self, model: nn.Module, masks: Masks, context: ScoringContext) -> dict[str, Tensor]:
        return {name: w.detach().abs() for name, w in self.weights(model, masks).items()}

    def find(self, request: SearchRequest, context: SearchContext) -> EarlyBirdTicket:
        """The early-bird ticket of `request`'s seeded model, trained on `context.data`."""
        return self.search(
            context.build(request),
            context.data,
            request.compression,
            train_config=request.train,
            scope=request.scope,
            options=request.options or EarlyBirdOptions(),
            device=context.device,
            progress=context.progress,
        )

    def search(
        self,
        model: nn.Module,
        data,
        compression: float,
        *,
        train_config: TrainConfig,
        scope: Scope = "global",
        options: EarlyBirdOptions | None = None,
        device: torch.device | str | None = None,
        progress: bool | None = None,
    ) -> EarlyBirdTicket:
        """Train a copy of `model` densely under `train_config` until the stopping rule fires.

        Training uses `train_config` as given (its learning-rate schedule spans its whole
        budget, as in the paper, where tickets emerge while the rate is still high) and stops at
        the first epoch end where `should_stop` holds, after `max_epochs` epochs, or when the
        budget runs out. The ticket's mask is the last one drawn (drawn once more at the end
        of training when the budget ends between epochs); `converged` says whether the rule
        fired. Its weights are those at the stopping point (`restart="trained"`) or the
        initial ones (`restart="init"`), with pruned weights zero; `source_state` holds them
        unmasked. Search cost: the epochs and steps trained and the masks drawn. `model`
        itself is not changed.
        """
        options = options or EarlyBirdOptions()
        if options.mode == "bn-channel" and scope != "global":
            raise PaiError("early-bird bn-channel mode ranks channels globally; use scope='global'")
        work = copy.deepcopy(model)
        initial = state_copy(work)
        drawing = _MaskDrawing(work, compression, scope, options)
        result = train(
            work,
            data,
            train_config,
            device=device,
            on_epoch_end=drawing.on_epoch_end,
            progress=progress,
        )
        if not result.stopped_early:  # the budget ended between two epoch ends: draw once more
            drawing.draw()
        if not drawing.converged:
            log.warning(
                "early-bird did not converge (epsilon %g) in %g epochs; using the last mask",
                options.epsilon,
                result.metrics["epochs"],
            )
        masks = drawing.history[-1]
        source = state_copy(work) if options.restart == "trained" else initial
        start = copy.deepcopy(model)
        start.load_state_dict(source)
        masks = masks.to(next(start.parameters()).device)
        masks.apply(start)
        cost = SearchCost(
            epochs=float(result.metrics["epochs"]),
            steps=int(result.metrics["steps"]),
            scoring_passes=drawing.drawn,
        )
        return EarlyBirdTicket(
            masks,
            state_copy(start),
            cost,
            source_state=source,
            converged=drawing.converged,
            distances=drawing.distances,
        )


class _MaskDrawing:
    """The masks drawn after every epoch of the search, and the stopping rule over them."""

    def __init__(
        self, model: nn.Module, compression: float, scope: Scope, options: EarlyBirdOptions
    ):
        self.model, self.compression, self.scope, self.options = model, compression, scope, options
        self.history: deque[Masks] = deque(maxlen=WINDOW)
        self.distances: list[float] = []
        self.drawn = 0
        self.converged = False

    def draw(self) -> None:
        self.history.append(_draw(self.model, self.compression, self.scope, self.options.mode))
        self.drawn += 1
        if len(self.history) > 1:
            self.distances.append(mask_distance(self.history[-2], self.history[-1]))
        self.converged = should_stop(
            self.history, self.options.epsilon, distance=self.options.distance
        )

    def on_epoch_end(self, epoch: int, net: nn.Module) -> bool:
        self.draw()
        recent = recent_distances(self.history, distance=self.options.distance)
        log.info(
            "early-bird epoch %d: largest of the last %d distances %s",
            epoch,
            len(recent),
            f"{max(recent):.4f}" if recent else "n/a",
        )
        max_epochs = self.options.max_epochs
        return self.converged or (max_epochs is not None and epoch >= max_epochs)
