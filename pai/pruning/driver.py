"""The prune driver: score, keep the top, repeat over a compression schedule.

One call turns a scorer into a mask at a target compression. Iterative scorers (SynFlow) prune
in rounds; each round scores the network under the current mask and ranks only the live
weights, so a pruned weight never comes back, unless the scorer asks for revival explicitly
(`allows_revival`, FORCE): it then ranks every weight live in the starting masks each round.
The scope's allocator sets each round's per-layer counts. The model passed in is never
changed: scoring runs on one private copy.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from pai.core.devices import resolve_device
from pai.core.errors import PaiError, unknown_name
from pai.models import model_input_shape
from pai.pruning.allocators import Allocator, keep_allocated, layer_counts, resolve_allocator
from pai.pruning.choices import SCHEDULES
from pai.pruning.masks import Masks, as_masks, kept_count
from pai.pruning.registry import Scorer, ScoringContext, resolve_scorer, scorer_label


def round_compressions(
    start: float, compression: float, rounds: int, schedule: str = "exponential"
) -> list[float]:
    """The compression reached after each of `rounds` rounds, going from `start` to `compression`.

    `exponential` (Tanaka et al. 2020): round k of n keeps a fraction (start/compression)^(k/n)
    of the weights alive at the start, i.e. compression start * (compression/start)^(k/n).
    `linear`: the density decreases linearly, from 1/start to 1/compression in n equal steps.
    The last entry is `compression` itself, so the final mask keeps exactly its target count.
    """
    if schedule not in SCHEDULES:
        raise unknown_name("schedule", schedule, SCHEDULES)
    if not isinstance(rounds, int) or rounds < 1:
        raise PaiError(f"rounds must be a whole number >= 1, got {rounds!r}")
    steps = []
    for k in range(1, rounds):
        if schedule == "exponential":
            steps.append(start * (compression / start) ** (k / rounds))
        else:
            steps.append(1 / (1 / start + (1 / compression - 1 / start) * k / rounds))
    return [*steps, compression]


def check_scores_without_training(scorer: Scorer) -> None:
    """PaiError for a scorer that finds its mask by training (`needs_training`, early-bird)."""
    if getattr(scorer, "needs_training", False):
        raise PaiError(
            f"scorer {scorer.name!r} produces tickets through training, which pai.prune does not "
            "run; use it through `pai compare`"
        )


def _check_target(masks: Masks, compression: float, scope: str | Allocator) -> None:
    """PaiError unless `compression` is reachable from `masks` in `scope` by pruning only."""
    allocator = resolve_allocator(scope)
    if allocator.joint:
        target = kept_count(masks.total, compression)
        if masks.kept < target:
            raise PaiError(
                f"the starting masks keep {masks.kept} weights, fewer than the {target} that "
                f"compression {compression:g} keeps; pruning never revives weights"
            )
        return
    if scope != "layerwise":
        shapes = {name: tuple(mask.shape) for name, mask in masks.items()}
        layer_counts(allocator, shapes, compression, masks.layer_kept())
        return
    smallest = min(m.numel() for m in masks.values())
    if not 1 <= compression <= smallest:
        raise PaiError(
            f"layerwise compression {compression:g} is not allowed: the smallest layer has "
            f"{smallest} weights; allowed: 1 to {smallest}"
        )
    kept = masks.layer_kept()
    for name, mask in masks.items():
        target = kept_count(mask.numel(), compression)
        if kept[name] < target:
            raise PaiError(
                f"the starting mask of {name!r} keeps {kept[name]} weights, fewer than the "
                f"{target} that layerwise compression {compression:g} keeps"
            )


def check_scores(scores: dict[str, Tensor], masks: Masks, scorer: Scorer) -> None:
    """PaiError unless `scores` is a dict with one floating tensor per masked parameter, of its
    shape, finite on every live weight.

    Integer (and bool) scores are refused: the ranking breaks ties by position (the earlier
    layer, then the lower index), so coarse integer scores would leave much of the mask to
    layer order; a scorer whose scores are integer-valued returns them as float64 to say that
    ties falling to position are intended.
    """
    who = scorer_label(scorer)
    if not isinstance(scores, Mapping):
        raise PaiError(
            f"{who} returned a {type(scores).__name__}, not a dict of tensors by parameter name"
        )
    missing, extra = sorted(set(masks) - set(scores)), sorted(set(scores) - set(masks))
    if missing or extra:
        problems = [f"no scores for {missing}"] if missing else []
        problems += [f"scores for {extra}, which are not masked"] if extra else []
        raise PaiError(
            f"{who} returned {' and '.join(problems)}; expected exactly one per masked parameter"
        )
    for name, mask in masks.items():
        score = scores[name]
        if not isinstance(score, Tensor):
            raise PaiError(
                f"{who} returned a {type(score).__name__} for {name!r}, not a torch tensor"
            )
        if not score.is_floating_point():
            raise PaiError(
                f"{who} returned {score.dtype} scores for {name!r}; scores must be floating "
                "(ties break by position, so return float64 for integer-valued scores)"
            )
        if score.shape != mask.shape:
            raise PaiError(
                f"{who} returned scores of shape {tuple(score.shape)} for {name!r}, whose shape "
                f"is {tuple(mask.shape)}"
            )
        # A finite sum has no NaN or infinite term: only otherwise are the live scores read.
        finite = torch.isfinite(score.detach().sum())
        if not finite and (mask & ~torch.isfinite(score.to(mask.device))).any():
            raise PaiError(f"{who} gave non-finite scores (NaN, inf) to {name!r}")


def _fingerprint(model: nn.Module) -> tuple:
    """What scoring must leave as it is, cheaply: every parameter's and buffer's identity and
    version counter (torch bumps it on every in-place write), `requires_grad`, every mode."""
    return (
        tuple((n, id(p), p._version, p.requires_grad) for n, p in model.named_parameters()),
        tuple((n, id(b), b._version) for n, b in model.named_buffers()),
        tuple(module.training for module in model.modules()),
    )


@dataclass
class Scoring:
    """A scorer ready to run: the private masked copy of the model and the context."""

    scorer: Scorer
    work: nn.Module
    masks: Masks
    context: ScoringContext

    def scores(self) -> dict[str, Tensor]:
        """Score the copy under `masks` (pruned weights zeroed first, after restoring the
        original weights for a scorer that allows revival) and check the result."""
        if self.context.original_weights is not None:
            with torch.no_grad():
                for name, weight in self.context.original_weights.items():
                    self.work.get_parameter(name).copy_(weight)
        self.masks.apply(self.work)
        before = _fingerprint(self.work)
        try:
            scores = self.scorer.score(self.work, self.masks, self.context)
        except PaiError as error:
            raise PaiError(f"{scorer_label(self.scorer)}: {error}") from error
        except Exception as error:  # a plugin's own failure, named as the plugin's
            raise PaiError(
                f"{scorer_label(self.scorer)} failed in score(): {type(error).__name__}: {error}"
            ) from error
        if _fingerprint(self.work) != before:
            raise PaiError(
                f"{scorer_label(self.scorer)} changed the model it scored (weights, buffers, "
                "requires_grad or train/eval mode); score() must leave it as given"
            )
        check_scores(scores, self.masks, self.scorer)
        return scores


def _runnable(scorer: str | Scorer) -> Scorer:
    """The scorer named or given, PaiError unless `prune` can run it (it does not train)."""
    scorer = resolve_scorer(scorer)
    check_scores_without_training(scorer)
    return scorer


def prepare_scoring(
    model: nn.Module,
    scorer: str | Scorer,
    masks: Masks | Mapping[str, Tensor] | None,
    data: Iterable[tuple[Tensor, Tensor]] | None,
    input_shape: Sequence[int] | None,
    seed: int,
    device: torch.device | str | None,
    target: tuple[float, str | Allocator] | None = None,
) -> Scoring:
    """Check the arguments, read `data` once, and make the one copy of `model` scoring uses.

    `target` (compression, scope) is checked against the starting masks before anything is
    copied. The copy is on `device`, in eval mode, with the pruned weights zero and
    `requires_grad` on exactly the masked parameters; the model itself is left untouched.
    For a scorer that allows revival, the context keeps the masked parameters' original values.
    Scorers that train are accepted here: `prune` and `compute_scores` refuse them first.
    """
    scorer = resolve_scorer(scorer)
    masks = Masks.dense(model) if masks is None else as_masks(masks)
    masks.check_model(model)
    if not len(masks):
        raise PaiError("there is nothing to prune: the masks cover no parameter")
    if target is not None:
        _check_target(masks, *target)
    device = resolve_device(device)
    batches = None if data is None else [(x.to(device), y.to(device)) for x, y in data]
    if scorer.needs_data and not batches:
        raise PaiError(
            f"scorer {scorer.name!r} needs data: pass data= as (inputs, targets) batches"
        )
    if input_shape is not None or hasattr(model, "input_shape"):
        input_shape = model_input_shape(model, input_shape)
    elif batches:
        input_shape = tuple(batches[0][0].shape[1:])
    context = ScoringContext(
        data=batches,
        input_shape=input_shape,
        generator=torch.Generator().manual_seed(seed),
        device=device,
    )
    work = copy.deepcopy(model).to(device).eval()
    for name, p in work.named_parameters():
        p.requires_grad_(name in masks)
    if getattr(scorer, "allows_revival", False):
        context.original_weights = {n: work.get_parameter(n).detach().clone() for n in masks}
    masks = masks.to(device)
    masks.apply(work)
    return Scoring(scorer, work, masks, context)


def compute_scores(
    model: nn.Module,
    scorer: str | Scorer,
    *,
    masks: Masks | Mapping[str, Tensor] | None = None,
    data: Iterable[tuple[Tensor, Tensor]] | None = None,
    input_shape: Sequence[int] | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> dict[str, Tensor]:
    """One round of `scorer`'s scores for `model` under `masks` (default: dense), as `prune`
    computes them: on a masked copy in eval mode, leaving `model` unchanged."""
    scorer = _runnable(scorer)
    return prepare_scoring(model, scorer, masks, data, input_shape, seed, device).scores()


def prune(
    model: nn.Module,
    scorer: str | Scorer,
    compression: float,
    *,
    data: Iterable[tuple[Tensor, Tensor]] | None = None,
    rounds: int | None = None,
    schedule: str = "exponential",
    scope: str | Allocator = "global",
    input_shape: Sequence[int] | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    masks: Masks | Mapping[str, Tensor] | None = None,
) -> Masks:
    """Prune `model` to `compression` (prunable weights / kept weights) with `scorer`.

    `scorer` is a registered name or a `Scorer`. `rounds` (default: the scorer's) rounds follow
    `schedule` (see `round_compressions`); `scope` names the density allocator (`global`,
    `layerwise`, `erk`, `from-masks:FILE`, ...: `pai.pruning.allocators`), which sets every
    round's per-layer counts at that round's compression. `data` is an iterable of (inputs,
    targets) batches, read once and used as given. `input_shape` defaults to the model's (zoo
    models record it), else the first batch's. `masks` (`Masks`, or a plain {name: bool tensor}
    mapping) starts from an already pruned network (compression stays relative to all its
    prunable weights); by default every prunable weight is live. Scores are computed on
    `device` (default: CUDA when available); the returned masks are on the model's device,
    keyed like its parameters.
    """
    scorer = _runnable(scorer)
    scoring = prepare_scoring(
        model, scorer, masks, data, input_shape, seed, device, target=(compression, scope)
    )
    rounds = scoring.scorer.default_rounds if rounds is None else rounds
    allocator = resolve_allocator(scope)
    start = scoring.masks  # a scorer that allows revival ranks every weight live here
    targets = round_compressions(scoring.masks.compression, compression, rounds, schedule)
    progress = tqdm(targets, desc=f"{scoring.scorer.name} rounds", disable=len(targets) < 2 or None)
    for target in progress:
        live = start if getattr(scoring.scorer, "allows_revival", False) else scoring.masks
        scoring.masks = keep_allocated(scoring.scores(), target, allocator, live=live)
    return scoring.masks.to(model.get_parameter(next(iter(scoring.masks))).device)
