"""Early-bird's two stopping rules: distances between successive masks, or to the newest one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pai.cli import build_parser
from pai.cli.compare import compare_config
from pai.core.errors import PaiError
from pai.core.store import canonical
from pai.pruning.masks import Masks
from scorers.earlybird import (
    EarlyBirdOptions,
    _MaskDrawing,
    newest_distances,
    should_stop,
    successive_distances,
)


def _kept(indices: list[int], size: int = 40) -> Masks:
    mask = torch.zeros(size, dtype=torch.bool)
    mask[indices] = True
    return Masks({"w": mask})


def _drifting() -> list[Masks]:
    """Five masks of 10 of 40 weights; each moves one kept weight one place on: every
    successive distance is 2/40 = 0.05, and the newest differs from the oldest in 8 weights."""
    return [_kept([*range(k, 10), *range(10, 10 + k)]) for k in range(5)]


def test_the_two_rules_disagree_on_masks_that_drift():
    history = _drifting()
    assert successive_distances(history) == pytest.approx([0.05, 0.05, 0.05, 0.05])
    # d(m_k, m_4) = 2 * (4 - k) / 40
    assert newest_distances(history) == pytest.approx([0.2, 0.15, 0.1, 0.05])
    assert should_stop(history, epsilon=0.1)
    assert should_stop(history, epsilon=0.1, distance="successive")
    assert not should_stop(history, epsilon=0.1, distance="newest")
    assert should_stop(history, epsilon=0.21, distance="newest")


def test_newest_looks_at_the_last_five_masks_only():
    history = [_kept([30, 31, 32]), *[_kept([0, 1, 2])] * 5]
    assert newest_distances(history) == [0.0, 0.0, 0.0, 0.0]
    assert should_stop(history, epsilon=0.01, distance="newest")
    assert not should_stop(history[:5], epsilon=0.01, distance="newest")  # m_0 is far off


@pytest.mark.parametrize("distance, stops", [("successive", True), ("newest", False)])
def test_the_search_stops_by_the_rule_of_its_options(distance, stops):
    """The masks `_drifting` gives, drawn from a layer whose 10 largest weights drift."""
    layer = nn.Linear(40, 1, bias=False)
    drawing = _MaskDrawing(layer, 4.0, "global", EarlyBirdOptions(epsilon=0.1, distance=distance))
    for expected in _drifting():
        with torch.no_grad():
            layer.weight.copy_(0.5 + expected["w"].double().view(1, 40))
        drawing.draw()
        assert drawing.history[-1]["weight"].view(40).equal(expected["w"])
    assert drawing.converged is stops


def test_successive_is_the_default_and_leaves_the_hash_as_it_was():
    assert EarlyBirdOptions(distance="successive") == EarlyBirdOptions()
    assert "distance" not in canonical(EarlyBirdOptions())
    assert canonical(EarlyBirdOptions(distance="newest"))["distance"] == "newest"
    with pytest.raises(PaiError, match="'oldest'.*newest, successive"):
        EarlyBirdOptions(distance="oldest")


@pytest.mark.parametrize("flag", ["--eb-distance", "--earlybird-distance"])
def test_compare_takes_the_rule_as_a_flag(flag):
    argv = ["compare", "--model", "lenet300", "--dataset", "mnist", "--methods", "earlybird"]
    argv += ["--compressions", "4", "--steps", "5", "--out", "unused", flag, "newest"]
    config = compare_config(build_parser().parse_args(argv))
    assert config.options["earlybird"]["distance"] == "newest"
