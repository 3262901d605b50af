"""Early-bird tickets (You et al. 2020, "Drawing Early-Bird Tickets"): masks found early in training.

The mask a network would be pruned to stops changing long before training ends. Early-bird
trains the dense network, draws the mask at the target compression after every epoch, and stops
as soon as the recent masks agree; the ticket is that mask, found after a few epochs instead of
a full training. It needs training, so `pai.prune` rejects it; the comparison harness calls its
`find_ticket`, the protocol extension for scorers that train (see `scorers/README.md`).

The stopping rule, exactly: after epoch e the mask m_e is drawn. The last `window` (5) masks are
kept. Once `window` masks exist, the `window - 1` normalized Hamming distances between successive
ones, d(m_{e-4}, m_{e-3}), ..., d(m_{e-1}, m_e), are computed, and training stops at the end of
epoch e when the largest of them is below `epsilon` (default 0.1). The normalized Hamming
distance is the fraction of prunable weights kept by one mask and pruned by the other. (The
reference implementation compares the newest mask with each of the four before it and never
stops training; here the training loop really stops.)
"""

from __future__ import annotations

import copy
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from pai.core.errors import PaiError, unknown_name
from pai.pruning.masks import Masks, Scope, keep_topk, kept_count, prunable_parameters
from pai.pruning.registry import Scorer, ScoringContext
from pai.search.ticket import SearchCost, Ticket
from pai.training.config import TrainConfig
from pai.training.loop import state_copy, train

log = logging.getLogger(__name__)

MODES: tuple[str, ...] = ("magnitude", "bn-channel")
RESTARTS: tuple[str, ...] = ("trained", "init")
WINDOW = 5
EPSILON = 0.1


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


def should_stop(history: Sequence[Masks], epsilon: float = EPSILON, window: int = WINDOW) -> bool:
    """True when `window` masks exist and the largest of the `window - 1` distances between
    successive ones among the last `window` is below `epsilon` (the rule of the module docstring).
    """
    if len(history) < window:
        return False
    return max(successive_distances(history, window)) < epsilon


def magnitude_mask(model: nn.Module, compression: float, scope: Scope = "global") -> Masks:
    """Keep the largest |w| of the prunable weights: exactly `kept_count(total, compression)`."""
    scores = {name: p.detach().abs() for name, p in prunable_parameters(model).items()}
    return keep_topk(scores, compression, scope)


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
    """An early-bird ticket, with whether the stopping rule fired and the distances it saw.

    `distances[i]` is d(m_i, m_{i+1}) between the masks drawn after epochs i + 1 and i + 2.
    """

    converged: bool = False
    distances: list[float] = field(default_factory=list)


def _draw(model: nn.Module, compression: float, scope: Scope, mode: str) -> Masks:
    if mode == "bn-channel":
        return bn_channel_mask(model, compression)
    return magnitude_mask(model, compression, scope)


class EarlyBirdScorer(Scorer):
    """Early-bird tickets (You et al. 2020): the training-time mask, taken once it stops changing.

    `score` is the criterion each epoch's mask ranks by, |w| of the current weights; the ticket
    itself comes from `find_ticket`, which trains.
    """

    name = "earlybird"
    needs_data = True
    needs_training = True
    default_rounds = 1
    description = "magnitude mask drawn during dense training, stopped when masks stop changing"

    def score(self, model: nn.Module, masks: Masks, context: ScoringContext) -> dict[str, Tensor]:
        return {name: w.detach().abs() for name, w in self.weights(model, masks).items()}

    def find_ticket(
        self,
        model: nn.Module,
        data,
        compression: float,
        *,
        train_config: TrainConfig,
        scope: Scope = "global",
        device: torch.device | str | None = None,
        progress: bool | None = None,
        transform: Callable[[Masks], Masks] | None = None,
        epsilon: float = EPSILON,
        mode: str = "magnitude",
        restart: str = "trained",
        max_epochs: int | None = None,
    ) -> EarlyBirdTicket:
        """Train a copy of `model` densely under `train_config` until the stopping rule fires.

        Training uses `train_config` as given (its learning-rate schedule spans its whole
        budget, as in the paper, where tickets emerge while the rate is still high) and stops at
        the first epoch end where `should_stop` holds, after `max_epochs` epochs, or when the
        budget runs out. The ticket's mask is the last one drawn (drawn once more at the end
        of training when the budget ends between epochs); `converged` says whether the rule
        fired. Its weights are those at the stopping point (`restart="trained"`) or the
        initial ones (`restart="init"`), with pruned weights zero. `transform` maps the mask
        found to the one the ticket uses (the harness's shuffle sanity check), before the
        weights are masked. Search cost: the epochs and steps trained and the masks drawn.
        `model` itself is not changed.
        """
        if mode not in MODES:
            raise unknown_name("early-bird mode", mode, MODES)
        if restart not in RESTARTS:
            raise unknown_name("early-bird restart", restart, RESTARTS)
        if not 0 < epsilon <= 1:
            raise PaiError(f"early-bird epsilon must be in (0, 1], got {epsilon!r}")
        if max_epochs is not None and max_epochs < 1:
            raise PaiError(f"early-bird max_epochs must be >= 1, got {max_epochs!r}")
        if mode == "bn-channel" and scope != "global":
            raise PaiError("early-bird bn-channel mode ranks channels globally; use scope='global'")

        work = copy.deepcopy(model)
        initial = state_copy(work)
        history: deque[Masks] = deque(maxlen=WINDOW)
        distances: list[float] = []
        drawn = 0
        converged = False

        def draw() -> None:
            nonlocal drawn
            history.append(_draw(work, compression, scope, mode))
            drawn += 1
            if len(history) > 1:
                distances.append(mask_distance(history[-2], history[-1]))

        def on_epoch_end(epoch: int, net: nn.Module) -> bool:
            nonlocal converged
            draw()
            converged = should_stop(history, epsilon)
            recent = successive_distances(history)
            log.info(
                "early-bird epoch %d: largest of the last %d distances %s",
                epoch,
                len(recent),
                f"{max(recent):.4f}" if recent else "n/a",
            )
            return converged or (max_epochs is not None and epoch >= max_epochs)

        result = train(
            work,
            data,
            train_config,
            device=device,
            on_epoch_end=on_epoch_end,
            progress=progress,
        )
        if not result.stopped_early:  # the budget ended between two epoch ends: draw once more
            draw()
            converged = should_stop(history, epsilon)
        if not converged:
            log.warning(
                "early-bird did not converge (epsilon %g) in %g epochs; using the last mask",
                epsilon,
                result.metrics["epochs"],
            )
        masks = history[-1]
        if transform is not None:
            masks = transform(masks)
        state = state_copy(work) if restart == "trained" else initial
        start = copy.deepcopy(model)
        start.load_state_dict(state)
        masks = masks.to(next(start.parameters()).device)
        masks.apply(start)
        cost = SearchCost(
            epochs=float(result.metrics["epochs"]),
            steps=int(result.metrics["steps"]),
            scoring_passes=drawn,
        )
        return EarlyBirdTicket(
            masks, state_copy(start), cost, converged=converged, distances=distances
        )
