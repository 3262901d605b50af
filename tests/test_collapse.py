"""Layer collapse, effective masks and critical compression on nets counted by hand."""

from __future__ import annotations

import copy
import math
import pickle
import shlex

import pandas as pd
import pytest
import torch
from torch import Tensor, nn

import pai
from pai.cli import main
from pai.pruning.collapse import (
    CriticalCompression,
    critical_compression,
    effective_compression,
    effective_masks,
    layer_collapse,
)
from pai.core.errors import PaiError
from pai.pruning.masks import Masks, kept_count
from pai.models import BasicBlock, build_model
from pai.pruning.driver import compute_scores, prune
from pai.pruning.registry import Scorer, ScoringContext


def two_layer_mlp() -> nn.Sequential:
    """Linear 4 -> 10 (40 weights), ReLU, Linear 10 -> 1 (exactly 10 weights): N 50, L 2."""
    return nn.Sequential(nn.Linear(4, 10), nn.ReLU(), nn.Linear(10, 1))


def planted(model: nn.Module, values: dict[str, Tensor]) -> nn.Module:
    with torch.no_grad():
        for name, value in values.items():
            model.get_parameter(name).copy_(value)
    return model


def magnitude_mlp(best_of_small_layer: float) -> nn.Sequential:
    """|w| of the 40-weight layer are 2, 3, ..., 41 (signs alternate); the 10-weight layer's
    are 0.1, ..., 0.9 and one planted `best_of_small_layer`."""
    signs = torch.tensor([(-1.0) ** i for i in range(40)])
    big = (torch.arange(2.0, 42.0) * signs).reshape(10, 4)
    small = torch.tensor([[0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.7, -0.8, 0.9, -best_of_small_layer]])
    return planted(two_layer_mlp(), {"0.weight": big, "2.weight": small})


# --- layer collapse ---------------------------------------------------------------------------


def test_layer_collapse_lists_exactly_the_empty_layers_in_order():
    masks = Masks(
        {
            "a": torch.zeros(3, dtype=torch.bool),
            "b": torch.tensor([False, True]),
            "c": torch.zeros(2, 2, dtype=torch.bool),
        }
    )
    assert layer_collapse(masks) == ["a", "c"]
    assert layer_collapse(Masks({"a": torch.tensor([True])})) == []


# --- effective masks --------------------------------------------------------------------------


def test_dead_hidden_units_make_their_other_weights_ineffective():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    first = torch.ones(4, 3, dtype=torch.bool)
    first[1] = False  # unit 1 gets no input: its outgoing weights carry nothing
    second = torch.ones(2, 4, dtype=torch.bool)
    second[:, 2] = False  # unit 2 reaches no output: its incoming weights are useless
    second[0, 3] = False
    masks = Masks({"0.weight": first, "2.weight": second})
    effective = effective_masks(model, masks, input_shape=(3,))
    expected_first = first.clone()
    expected_first[2] = False
    expected_second = second.clone()
    expected_second[:, 1] = False
    assert effective["0.weight"].tolist() == expected_first.tolist()
    assert effective["2.weight"].tolist() == expected_second.tolist()
    # 12 + 8 prunable; kept 9 + 5; effective 6 (units 0, 3) + 3 (to outputs from units 0, 3)
    assert effective.kept == 9
    assert effective_compression(model, masks, input_shape=(3,)) == 20 / 9


def test_biases_and_batchnorm_shifts_are_no_path():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        model[0].bias.fill_(5.0)
        model[1].bias.fill_(3.0)
    masks = Masks({"0.weight": torch.tensor([[True, True], [False, False]]),
                   "3.weight": torch.tensor([[True, True]])})  # fmt: skip
    effective = effective_masks(model, masks, input_shape=(2,))
    assert effective["0.weight"].tolist() == [[True, True], [False, False]]
    assert effective["3.weight"].tolist() == [[True, False]]  # unit 1 is fed only by biases


def test_disconnected_network_has_no_effective_weight():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    masks = Masks(
        {"0.weight": torch.ones(4, 3, dtype=torch.bool),
         "2.weight": torch.zeros(4, 4, dtype=torch.bool),
         "4.weight": torch.ones(2, 4, dtype=torch.bool)}
    )  # fmt: skip
    effective = effective_masks(model, masks, input_shape=(3,))
    assert effective.kept == 0 and set(effective) == set(masks)
    assert effective_compression(model, masks, input_shape=(3,)) == math.inf


def test_max_pool_windows_connect_every_position():
    # With an all-ones input a max pool passes gradient through one position per window; the
    # connectivity pass must still count every weight of a dense net.
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3, padding=1),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(2, 3),
    )  # fmt: skip
    dense = Masks.dense(model)
    assert effective_masks(model, dense, input_shape=(1, 8, 8)) == dense


def test_a_fully_pruned_residual_branch_does_not_disconnect():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        BasicBlock(4, 4, stride=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2),
    )  # fmt: skip
    masks = dict(Masks.dense(model))
    masks["3.conv1.weight"] = torch.zeros_like(masks["3.conv1.weight"])
    masks = Masks(masks)
    effective = effective_masks(model, masks, input_shape=(1, 6, 6))
    assert layer_collapse(masks) == ["3.conv1.weight"]
    assert effective["0.weight"].all() and effective["6.weight"].all()  # the skip carries flow
    assert not effective["3.conv2.weight"].any()  # its only input is the empty conv1


def test_model_is_left_unchanged():
    model = build_model("resnet20", "cifar10", seed=1).train()
    before = copy.deepcopy(model.state_dict())
    grads = {name: p.requires_grad for name, p in model.named_parameters()}
    masks = prune(model, "random", 30, device="cpu")
    effective_masks(model, masks)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert grads == {name: p.requires_grad for name, p in model.named_parameters()}


@pytest.mark.parametrize("name", ["vgg19", "resnet56"])
def test_dense_deep_nets_are_fully_effective(name):
    # Path counts of these nets reach 1e50 to 1e160; the pass must neither overflow nor lose one
    model = build_model(name, "cifar10", seed=0)
    dense = Masks.dense(model)
    assert effective_masks(model, dense) == dense


def test_path_counts_beyond_float64_range_still_give_exact_masks():
    # 200 dense 64-wide layers have 64^200 ~ 1e361 paths per output, past float64's 1.8e308
    layers: list[nn.Module] = []
    for _ in range(200):
        layers += [nn.Linear(64, 64), nn.ReLU()]
    model = nn.Sequential(*layers)
    masks = dict(Masks.dense(model))
    masks["200.weight"] = masks["200.weight"].clone()
    masks["200.weight"][5] = False  # unit 5 of layer 101 gets no input
    masks = Masks(masks)
    effective = effective_masks(model, masks, input_shape=(64,))
    expected = dict(masks)
    expected["202.weight"] = masks["202.weight"].clone()
    expected["202.weight"][:, 5] = False  # so what leaves it carries nothing
    assert effective == Masks(expected)


def test_convs_on_a_one_pixel_map_use_only_their_centre_tap():
    # vgg16 for 28x28 inputs: four max pools leave 1x1 maps for the last three convs, whose
    # 3x3 kernels then see padding everywhere but at the centre.
    model = build_model("vgg16", "fashion-mnist", seed=0)
    dense = Masks.dense(model)
    effective = effective_masks(model, dense)
    for name in ("features.34.weight", "features.37.weight", "features.40.weight"):
        centre = torch.zeros(3, 3, dtype=torch.bool)
        centre[1, 1] = True
        assert torch.equal(effective[name], centre.expand(512, 512, 3, 3))
    assert effective.kept == dense.total - 3 * 512 * 512 * 8


# --- critical compression: one-shot, exact ---------------------------------------------------


def test_planted_magnitudes_give_the_hand_counted_critical_compression():
    # 21 weights of the big layer (|w| = 21..41) outrank the small layer's best (20.5): every
    # layer keeps a weight from k* = 22 kept weights on, so rho_cr = 50 / 22.
    model = magnitude_mlp(20.5)
    result = critical_compression(model, "magnitude", device="cpu")
    assert float(result) == 50 / 22
    assert result.first_collapsed_layer == "2.weight"
    assert result.max_compression == 25.0
    assert result.method == "exact" and result.prune_calls == 1
    assert result.layer_limits == {"0.weight": 50.0, "2.weight": 50 / 22}
    # pruning at the reported compression keeps k* weights and no layer collapses ...
    assert kept_count(50, float(result)) == 22
    assert layer_collapse(prune(model, "magnitude", float(result), device="cpu")) == []
    # ... and pruning one weight more empties the small layer
    assert layer_collapse(prune(model, "magnitude", 50 / 21, device="cpu")) == ["2.weight"]


def test_critical_compression_never_exceeds_rho_max():
    model = magnitude_mlp(100.0)  # each layer's best is among the top 2 = L
    result = critical_compression(model, "magnitude", device="cpu")
    assert float(result) == result.max_compression == 50 / 2


@pytest.mark.parametrize("name", ["lenet300", "conv4"])
def test_max_compression_is_weights_per_layer(name):
    model = build_model(name, "cifar10", seed=0)
    weights = pai.prunable_parameters(model)
    result = critical_compression(model, "magnitude", device="cpu")
    assert result.max_compression == sum(w.numel() for w in weights.values()) / len(weights)
    assert result <= result.max_compression


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_pruning_matches_the_count_from_its_seeded_scores(seed):
    model = two_layer_mlp()
    scores = compute_scores(model, "random", seed=seed, device="cpu")
    every = torch.cat([s.reshape(-1) for s in scores.values()])
    # a layer keeps a weight once k exceeds the number of weights scored above its best
    needed = max(int((every > s.max()).sum()) + 1 for s in scores.values())
    result = critical_compression(model, "random", seed=seed, device="cpu")
    assert float(result) == 50 / needed
    assert layer_collapse(prune(model, "random", float(result), seed=seed, device="cpu")) == []
    if needed > 1:
        after = prune(model, "random", 50 / (needed - 1), seed=seed, device="cpu")
        assert layer_collapse(after) == [result.first_collapsed_layer]


def test_zoo_model_exact_result_agrees_with_prune():
    model = build_model("lenet5", "mnist", seed=3)
    result = critical_compression(model, "magnitude", device="cpu")
    total = Masks.dense(model).total
    kept = round(total / float(result))
    assert layer_collapse(prune(model, "magnitude", float(result), device="cpu")) == []
    after = prune(model, "magnitude", total / (kept - 1), device="cpu")
    assert layer_collapse(after) == [result.first_collapsed_layer]


# --- critical compression: searches ----------------------------------------------------------


def grid_answer(top: float, limit: float, resolution: float) -> tuple[float, int]:
    """The largest point of the scan grid top / 10^(i * resolution) that is <= limit, and i+1."""
    step = 0
    while top / 10 ** (step * resolution) > limit:
        step += 1
    return top / 10 ** (step * resolution), step + 1


def test_iterative_magnitude_scan_finds_the_largest_safe_grid_point():
    # |w| does not change across rounds, so 5 rounds give the one-shot masks: no collapse iff
    # kept_count(50, c) >= 22, i.e. c <= 50 / 21.5.
    model = magnitude_mlp(20.5)
    result = critical_compression(model, "magnitude", rounds=5, resolution=0.1, device="cpu")
    expected, calls = grid_answer(25.0, 50 / 21.5, 0.1)
    assert result.method == "scan"
    assert float(result) == pytest.approx(expected, rel=1e-12)
    assert result.prune_calls == calls
    assert result.first_collapsed_layer == "2.weight"
    assert result.collapsed_at == pytest.approx(expected * 10**0.1, rel=1e-12)


def test_bisection_brackets_the_collapse_within_the_resolution():
    model = magnitude_mlp(20.5)
    result = critical_compression(
        model, "magnitude", rounds=3, search="bisection", resolution=0.01, device="cpu"
    )
    assert result.method == "bisection"
    assert 50 / 21.5 / 10**0.01 <= float(result) <= 50 / 21.5 < result.collapsed_at
    assert math.log10(result.collapsed_at) - result.log10 <= 0.01


def test_layerwise_pruning_never_empties_a_layer():
    result = critical_compression(two_layer_mlp(), "random", scope="layerwise", device="cpu")
    assert float(result) == 10.0  # the largest layerwise compression the 10-weight layer allows
    assert result.first_collapsed_layer is None and result.prune_calls == 1


@pytest.mark.slow
def test_synflow_reaches_rho_max_on_vgg16_seed_0():
    # results/collapse-vgg16: 100-round SynFlow keeps one weight in each of the 14 layers
    model = build_model("vgg16", "cifar10", seed=0)
    result = critical_compression(model, "synflow", device="cpu")
    assert float(result) == result.max_compression == 14_715_584 / 14
    assert result.method == "scan" and result.prune_calls == 1
    assert result.first_collapsed_layer is None


class ResidualMlp(nn.Module):
    """stem 2 -> 4, h + branch(h) with branch 4 -> 4 -> 4, fc 4 -> 1: N = 8 + 16 + 16 + 4."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(2, 4, bias=False)
        self.branch1 = nn.Linear(4, 4, bias=False)
        self.branch2 = nn.Linear(4, 4, bias=False)
        self.fc = nn.Linear(4, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.stem(x))
        return self.fc(torch.relu(h + self.branch2(torch.relu(self.branch1(h)))))


def test_path_criterion_survives_an_empty_branch():
    # magnitudes: fc 20..23 > stem 10..17 > branch1 1..2.5 > branch2 0.01..0.16. Layers: the
    # last branch2 weight is needed, k* = 4 + 8 + 16 + 1 = 29. Paths: fc alone is not
    # connected, the first stem weight connects through the skip, k* = 5.
    model = planted(
        ResidualMlp(),
        {
            "stem.weight": torch.arange(10.0, 18.0).reshape(4, 2),
            "branch1.weight": torch.linspace(1.0, 2.5, 16).reshape(4, 4),
            "branch2.weight": torch.linspace(0.01, 0.16, 16).reshape(4, 4),
            "fc.weight": torch.arange(20.0, 24.0).reshape(1, 4),
        },
    )
    layer = critical_compression(model, "magnitude", input_shape=(2,), device="cpu")
    path = critical_compression(
        model, "magnitude", input_shape=(2,), criterion="path", device="cpu"
    )
    assert float(layer) == 44 / 29 and layer.first_collapsed_layer == "branch2.weight"
    assert float(path) == 44 / 5 and path.method == "exact" and path.collapsed_at == 44 / 4
    assert path.first_collapsed_layer == "stem.weight"
    masks = prune(model, "magnitude", float(path), input_shape=(2,), device="cpu")
    assert effective_masks(model, masks, input_shape=(2,)).kept == 2  # stem weight + its fc


class TrainedTicket(Scorer):
    name = "trained-ticket"
    needs_data = False
    default_rounds = 1
    description = "a method that trains"
    needs_training = True

    def score(self, model: nn.Module, masks: Masks, context: ScoringContext) -> dict[str, Tensor]:
        raise AssertionError("never called")


def test_bad_arguments_are_rejected():
    model = two_layer_mlp()
    with pytest.raises(PaiError, match="training"):
        critical_compression(model, TrainedTicket())
    with pytest.raises(PaiError, match="criterion"):
        critical_compression(model, "random", criterion="paths")  # type: ignore[arg-type]
    with pytest.raises(PaiError, match="resolution"):
        critical_compression(model, "random", resolution=0)
    with pytest.raises(PaiError, match="exact"):
        critical_compression(model, "random", rounds=2, search="exact")


def test_result_is_the_ratio_as_a_float():
    result = critical_compression(magnitude_mlp(20.5), "magnitude", device="cpu")
    assert isinstance(result, float) and isinstance(result, CriticalCompression)
    assert float(result) == 50 / 22 and result * 22 == pytest.approx(50)
    assert math.log10(result) == result.log10 and result < 3
    restored = pickle.loads(pickle.dumps(result))
    assert float(restored) == float(result)
    assert restored.first_collapsed_layer == "2.weight" and restored.method == "exact"
    assert copy.deepcopy(result).layer_limits == result.layer_limits
    with pytest.raises(PaiError, match="rho_max"):
        CriticalCompression(
            30.0, first_collapsed_layer=None, max_compression=25.0, method="scan",
            criterion="layer", prune_calls=1,
        )  # fmt: skip


# --- CLI --------------------------------------------------------------------------------------


def test_cli_writes_table_csv_and_figures(tmp_path, data_root, capsys):
    out = tmp_path / "collapse"
    argv = [
        "collapse", "--model", "lenet5", "--dataset", "cifar10", "--scorers",
        "random,magnitude,snip", "--seeds", "2", "--compressions", "10,100", "--density-at", "10",
        "--data-from", "fashion-mnist", "--data-root", str(data_root), "--device", "cpu",
        "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    table = pd.read_csv(out / "collapse.csv")
    assert list(table.columns[:5]) == [
        "scorer", "seed", "log10_critical_compression", "first_collapsed_layer",
        "log10_max_compression",
    ]  # fmt: skip
    assert len(table) == 6 and set(table["seed"]) == {0, 1}
    model = build_model("lenet5", "cifar10", seed=1)
    expected = critical_compression(model, "magnitude", seed=1, device="cpu")
    row = table[(table["scorer"] == "magnitude") & (table["seed"] == 1)].iloc[0]
    assert row["log10_critical_compression"] == pytest.approx(expected.log10, rel=1e-12)
    snip = table[table["scorer"] == "snip"].iloc[0]
    assert "fashion-mnist" in snip["data"] and "padded 28x28 to 32x32" in snip["data"]
    summary = (out / "collapse.md").read_text()
    assert "| magnitude" in summary and "log10 rho_max" in summary
    fixed = pd.read_csv(out / "fixed_compressions.csv")
    assert len(fixed) == 3 * 2 * 2
    assert (fixed["effective_compression"] >= fixed["compression"] * (1 - 1e-3)).all()
    for figure in ("layer_density.png", "alive_layers.png"):
        assert (out / figure).read_bytes()[:4] == b"\x89PNG"
    assert "magnitude" in capsys.readouterr().out
    provenance = (out / "PROVENANCE.md").read_text()
    assert f"- command: `pai {shlex.join(argv)}`" in provenance and "- wall time: " in provenance


def test_cli_without_dataset_files_names_the_missing_data(tmp_path, capsys):
    empty = tmp_path / "data"
    empty.mkdir()
    empty.chmod(0o555)  # read-only: nothing may be downloaded there
    argv = ["collapse", "--model", "lenet5", "--dataset", "cifar10", "--scorers", "random,snip",
            "--data-root", str(empty), "--out", str(tmp_path / "out"), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 2
    assert "not found" in capsys.readouterr().err
