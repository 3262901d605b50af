"""Density allocators: per-layer counts against their formulas, the entry-point group, the
driver's rounds, the CLI."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

import pai
from pai.cli import main
from pai.core.errors import PaiError
from pai.pruning.allocators import (
    Allocator,
    allocator_entries,
    available_scopes,
    keep_allocated,
    layer_counts,
    register_allocator,
    resolve_allocator,
    unregister_allocator,
)
from pai.pruning.collapse import critical_compression
from pai.pruning.driver import prune, round_compressions
from pai.pruning.masks import Masks, keep_topk, kept_count

LENET300 = {
    "features.1.weight": (300, 784),
    "features.3.weight": (100, 300),
    "fc.weight": (10, 100),
}
# conv 3 -> 8 (3x3, 216 weights), conv 8 -> 16 (3x3, 1152), linear 64 -> 10 (640): 2008 weights
CONV = {"0.weight": (8, 3, 3, 3), "2.weight": (16, 8, 3, 3), "5.weight": (10, 64)}


def conv_net() -> nn.Sequential:
    """The network of CONV, for 3x6x6 inputs."""
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, bias=False),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64, 10),
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
    return net


def counts(scope: str, shapes, compression: float) -> list[int]:
    return list(layer_counts(scope, shapes, compression).values())


def test_built_in_allocators_are_found_through_the_entry_point_group():
    sources = {entry.name: entry.source for entry in allocator_entries()}
    builtins = {"global", "layerwise", "er", "erk", "smart-ratio", "from-masks"}
    assert builtins <= set(sources)
    assert all(sources[name] == "pai" for name in builtins)
    assert "from-masks:FILE" in available_scopes()


# --- ERK, ER and smart ratio against the formulas, computed by hand --------------------------


def test_erk_on_a_conv_net_is_the_rigl_formula_with_dense_layers_redistributed():
    # ERK weights (size x density up to one factor): 3+8+3+3 = 17, 8+16+3+3 = 30, 64+10 = 74.
    # c = 10 keeps 201: quotas 201 * (17, 30, 74) / 121 = 28.24, 49.83, 122.93; the two
    # largest remainders (122.93, 49.83) round up.
    assert counts("erk", CONV, 10) == [28, 50, 123]
    # c = 2 keeps 1004: 141.06, 248.93, 614.02 -> one more for the largest remainder (conv 2).
    assert counts("erk", CONV, 2) == [141, 249, 614]
    # c = 1.25 keeps 1606: conv 1 would need 225.6 > 216 weights, so it is dense; the rest,
    # 1390, would give the linear layer 989 > 640, so it is dense too; conv 2 keeps 750.
    assert counts("erk", CONV, 1.25) == [216, 750, 640]


def test_er_on_a_conv_net_ignores_the_kernel_size():
    # ER weights: 9 * (3 + 8) = 99, 9 * (8 + 16) = 216, 64 + 10 = 74; c = 10 keeps 201:
    # quotas 51.15, 111.61, 38.24 -> conv 2 gets the one left.
    assert counts("er", CONV, 10) == [51, 112, 38]


def test_smart_ratio_on_a_conv_net_decreases_quadratically_and_keeps_30_percent_last():
    # L = 3: ratios proportional to 3^2 + 3 = 12 and 2^2 + 2 = 6; the last layer keeps
    # 30% of 640 = 192. c = 10 keeps 201: the other 9 split 2592 : 6912 -> 2.45, 6.55.
    assert counts("smart-ratio", CONV, 10) == [2, 7, 192]
    # c = 4 keeps 502: 310 split 2592 : 6912 -> 84.55, 225.45.
    assert counts("smart-ratio", CONV, 4) == [85, 225, 192]


def test_lenet300_counts_against_the_formulas():
    # ER = ERK for linear layers: weights 784 + 300, 300 + 100, 100 + 10. c = 10 keeps 26620;
    # fc would keep 1837 > 1000, so it is dense and 25620 are split 1084 : 400 -> 18714.29,
    # 6905.66.
    assert counts("erk", LENET300, 10) == [18714, 6906, 1000]
    assert counts("er", LENET300, 10) == [18714, 6906, 1000]
    # c = 100 keeps 2662: 1810.29, 668.01, 183.70 -> fc gets the one left.
    assert counts("erk", LENET300, 100) == [1810, 668, 184]
    # smart ratio: fc keeps 300; 26320 split 235200 * 12 : 30000 * 6 -> 24742.06, 1577.94.
    assert counts("smart-ratio", LENET300, 10) == [24742, 1578, 300]
    assert counts("smart-ratio", LENET300, 100) == [2220, 142, 300]
    assert counts("layerwise", LENET300, 10) == [23520, 3000, 100]


@pytest.mark.parametrize("scope", ["er", "erk", "smart-ratio"])
@pytest.mark.parametrize("shapes", [LENET300, CONV], ids=["lenet300", "conv"])
def test_counts_sum_to_the_target_and_stay_within_each_layer(scope, shapes):
    sizes = [math.prod(shape) for shape in shapes.values()]
    total = sum(sizes)
    for compression in [1.0, 1.1, 3, 10, 31.6, 100, 316, 1000, total / len(sizes)]:
        if compression > total / len(sizes):
            continue
        kept = counts(scope, shapes, compression)
        assert sum(kept) == kept_count(total, compression), compression
        assert all(1 <= k <= size for k, size in zip(kept, sizes, strict=True)), compression
    with pytest.raises(PaiError, match="fewer than one per layer"):
        counts(scope, shapes, total / (len(sizes) - 1))


def test_from_masks_reproduces_the_file_at_its_compression_and_scales_it(tmp_path):
    model = pai.build_model("lenet300", "mnist", seed=0)
    masks = prune(model, "magnitude", 10)
    path = tmp_path / "masks.pt"
    masks.save(path)
    shapes = {name: tuple(mask.shape) for name, mask in masks.items()}
    scope = f"from-masks:{path}"
    assert layer_counts(scope, shapes, masks.compression) == masks.layer_kept()
    # at 100x the file's counts are scaled by kept_count(266200, 100) / 26620 = 1/10
    scaled = layer_counts(scope, shapes, 100)
    assert sum(scaled.values()) == 2662
    for name, kept in masks.layer_kept().items():
        assert abs(scaled[name] - kept / 10) < 1
    identity = resolve_allocator(scope).identity
    assert re.fullmatch(r"from-masks:[0-9a-f]{16}", identity)
    # random with the file's densities: the "random with IMP's layerwise densities" control
    ticket = prune(model, "random", masks.compression, scope=scope, seed=3)
    assert ticket.layer_kept() == masks.layer_kept() and ticket != masks


def test_from_masks_errors_name_the_problem(tmp_path):
    with pytest.raises(PaiError, match="needs an argument: write from-masks:FILE"):
        resolve_allocator("from-masks")
    with pytest.raises(PaiError, match="does not exist"):
        resolve_allocator(f"from-masks:{tmp_path / 'missing.pt'}")
    path = tmp_path / "other.pt"
    Masks({"a.weight": torch.ones(3, 4, dtype=torch.bool)}).save(path)
    with pytest.raises(PaiError, match="do not match the pruned layers"):
        layer_counts(f"from-masks:{path}", LENET300, 10)


def test_unknown_scopes_and_arguments_are_clear_errors():
    with pytest.raises(PaiError, match=r"unknown scope 'rowwise'; choose one of: er, erk, from-m"):
        resolve_allocator("rowwise")
    with pytest.raises(PaiError, match="scope 'erk' takes no argument"):
        resolve_allocator("erk:3")
    with pytest.raises(PaiError, match="ranks all layers jointly"):
        layer_counts("global", LENET300, 10)


# --- selection: the allocator counts, the scorer ranks within each layer ---------------------


def random_scores(shapes, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.rand(shape, generator=generator) for name, shape in shapes.items()}


def test_global_and_layerwise_are_keep_topk_bit_for_bit():
    scores = random_scores(CONV)
    live = {name: s > 0.3 for name, s in scores.items()}
    for scope in ("global", "layerwise"):
        for compression in (2, 10, 100):
            expected = keep_topk(scores, compression, scope, live=live)
            assert keep_allocated(scores, compression, scope, live=live) == expected


def test_each_layer_keeps_its_highest_scores():
    scores = random_scores(CONV, seed=1)
    masks = keep_allocated(scores, 10, "erk")
    assert list(masks.layer_kept().values()) == [28, 50, 123]
    for name, mask in masks.items():
        assert scores[name][mask].min() > scores[name][~mask].max()


def test_iterative_rounds_follow_the_allocator_and_never_revive():
    net = conv_net()
    shapes = {name: tuple(p.shape) for name, p in pai.prunable_parameters(net).items()}
    seen: list[Masks] = []

    class Recording(pai.Scorer):
        name = "recording-magnitude"
        description = "|w|, recording the masks it is shown"

        def score(self, model, masks, context):
            seen.append(masks)
            return {n: w.detach().abs() for n, w in self.weights(model, masks).items()}

    final = prune(net, Recording(), 100, rounds=4, scope="erk", input_shape=(3, 6, 6))
    history = [*seen[1:], final]
    for target, masks in zip(round_compressions(1.0, 100, 4), history, strict=True):
        assert masks.layer_kept() == layer_counts("erk", shapes, target)
    for earlier, later in zip(seen, history, strict=True):
        assert all(not (later[n] & ~earlier[n]).any() for n in earlier)


def test_random_with_erk_is_seeded_and_bit_for_bit_repeatable():
    net = conv_net()
    first = prune(net, "random", 10, scope="erk", seed=5, input_shape=(3, 6, 6))
    assert first == prune(net, "random", 10, scope="erk", seed=5, input_shape=(3, 6, 6))
    assert first != prune(net, "random", 10, scope="erk", seed=6, input_shape=(3, 6, 6))
    assert list(first.layer_kept().values()) == [28, 50, 123]


def test_starting_masks_cap_the_counts_and_too_few_live_weights_are_an_error():
    net = conv_net()
    start = prune(net, "magnitude", 2, scope="layerwise")
    masks = prune(net, "magnitude", 10, scope="erk", masks=start)
    assert masks.kept == kept_count(masks.total, 10)
    assert all(not (masks[n] & ~start[n]).any() for n in start)
    with pytest.raises(PaiError, match="more than the 1004 still alive"):
        prune(net, "magnitude", 1.5, scope="erk", masks=start)


def test_a_registered_allocator_is_a_scope_everywhere():
    class FirstLayerHeavy(Allocator):
        name = "first-heavy"
        description = "the first layer takes twice its size's share"

        def layer_counts(self, shapes, compression, available=None):
            weights = {n: math.prod(shapes[n]) * (2 if i == 0 else 1) for i, n in enumerate(shapes)}
            return self.proportional(weights, shapes, compression, available)

    register_allocator(FirstLayerHeavy)
    try:
        assert "first-heavy" in available_scopes()
        net = conv_net()
        masks = prune(net, "magnitude", 4, scope="first-heavy")
        assert masks.kept == kept_count(2008, 4)
        # 502 split 432 : 1152 : 640 -> 97.51, 260.03, 144.46: conv 1 gets the one left
        assert list(masks.layer_kept().values()) == [98, 260, 144]
    finally:
        unregister_allocator("first-heavy")


def test_critical_compression_accepts_allocators():
    net = conv_net()
    result = critical_compression(net, "magnitude", scope="erk", input_shape=(3, 6, 6))
    assert float(result) == pytest.approx(2008 / 3)  # no allocator empties a layer up to N / L
    assert result.first_collapsed_layer is None


# --- the command line --------------------------------------------------------------------------


def test_cli_lists_allocators(capsys):
    assert main(["allocators"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"erk\s+within each layer\s+pai\s+ERK.*Evci et al. 2020", out)
    assert re.search(r"global\s+all layers jointly\s+pai", out)
    assert re.search(r"from-masks:FILE\s+within each layer\s+pai", out)
    assert re.search(r"smart-ratio\s+within each layer\s+pai.*Su et al. 2020", out)


def test_cli_prunes_with_an_allocator_and_from_a_mask_file(tmp_path, capsys):
    first, second = tmp_path / "erk.pt", tmp_path / "again.pt"
    argv = ["prune", "--model", "lenet300", "--dataset", "mnist", "--scorer", "random"]
    assert main([*argv, "--compression", "10", "--scope", "erk", "--out", str(first)]) == 0
    masks = Masks.load(first)
    assert list(masks.layer_kept().values()) == [18714, 6906, 1000]
    scope = f"from-masks:{first}"
    assert main([*argv, "--compression", "10", "--scope", scope, "--out", str(second)]) == 0
    assert Masks.load(second).layer_kept() == masks.layer_kept()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--compression", "10", "--scope", "rowwise", "--out", str(second)])
    assert exit_info.value.code == 2
    assert "unknown scope 'rowwise'" in capsys.readouterr().err
