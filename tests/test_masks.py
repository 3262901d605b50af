"""Masks: exact counts, deterministic ties, live-only ranking, file format, torch.prune export."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pai.core.errors import PaiError
from pai.pruning.masks import Masks, keep_topk, kept_count, prunable_parameters


def small_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)
    )


def test_prunable_parameters_are_conv_and_linear_weights_only():
    assert list(prunable_parameters(small_net())) == ["0.weight", "4.weight"]
    assert list(prunable_parameters(small_net(), exclude=("4",))) == ["0.weight"]
    with pytest.raises(PaiError, match="nope"):
        prunable_parameters(small_net(), exclude=("nope",))


@pytest.mark.parametrize(
    ("total", "compression", "kept"),
    [(100, 1, 100), (100, 10, 10), (100, 3, 33), (10, 4, 3), (10, 10, 1), (7, 2, 4)],
)
def test_kept_count_rounds_half_up(total, compression, kept):
    assert kept_count(total, compression) == kept


@pytest.mark.parametrize("bad", [0.5, float("nan"), float("inf"), 101])
def test_kept_count_rejects_bad_compression(bad):
    with pytest.raises(PaiError, match="compression"):
        kept_count(100, bad)


def test_global_keep_topk_keeps_highest_exactly_k():
    scores = {"a": torch.tensor([5.0, 1.0, 3.0]), "b": torch.tensor([[4.0, 0.0], [2.0, 6.0]])}
    masks = keep_topk(scores, compression=7 / 3)
    assert masks["a"].tolist() == [True, False, False]
    assert masks["b"].tolist() == [[True, False], [False, True]]
    assert masks.kept == 3 and masks.total == 7


def test_ties_break_by_layer_order_then_index():
    scores = {"a": torch.ones(4), "b": torch.ones(4)}
    masks = keep_topk(scores, compression=8 / 3)
    assert masks["a"].tolist() == [True, True, True, False]
    assert not masks["b"].any()


def test_layerwise_keeps_same_fraction_per_layer():
    g = torch.Generator().manual_seed(0)
    scores = {"a": torch.rand(100, generator=g), "b": torch.rand(10, 10, 3, generator=g)}
    masks = keep_topk(scores, compression=4, scope="layerwise")
    assert masks.layer_kept() == {"a": 25, "b": 75}
    with pytest.raises(PaiError, match="smallest layer"):
        keep_topk(scores, compression=200, scope="layerwise")


def test_dead_weights_are_never_revived():
    scores = {"a": torch.tensor([100.0, 1.0, 2.0, 3.0])}
    live = {"a": torch.tensor([False, True, True, True])}
    masks = keep_topk(scores, compression=2, live=live)
    assert masks["a"].tolist() == [False, False, True, True]


def test_nan_scores_are_rejected_and_scope_checked():
    with pytest.raises(PaiError, match="NaN"):
        keep_topk({"a": torch.tensor([1.0, float("nan")])}, 2)
    with pytest.raises(PaiError, match="scope"):
        keep_topk({"a": torch.ones(3)}, 1, scope="local")  # type: ignore[arg-type]


def test_density_compression_and_layer_stats():
    masks = Masks(
        {"a": torch.tensor([True, False, False, False]), "b": torch.ones(4, dtype=torch.bool)}
    )
    assert masks.total == 8 and masks.kept == 5
    assert masks.density == pytest.approx(5 / 8)
    assert masks.compression == pytest.approx(8 / 5)
    assert masks.layer_density() == {"a": 0.25, "b": 1.0}


def test_masks_must_be_bool():
    with pytest.raises(PaiError, match="bool"):
        Masks({"a": torch.ones(3)})


def test_save_load_roundtrip_is_a_plain_dict(tmp_path):
    model = small_net()
    g = torch.Generator().manual_seed(1)
    scores = {n: torch.rand(p.shape, generator=g) for n, p in prunable_parameters(model).items()}
    masks = keep_topk(scores, 3)
    masks.save(tmp_path / "masks.pt")
    raw = torch.load(tmp_path / "masks.pt", weights_only=True)
    assert type(raw) is dict and set(raw) == set(masks)
    assert Masks.load(tmp_path / "masks.pt") == masks
    assert not list(tmp_path.glob(".*tmp"))
    with pytest.raises(PaiError, match="does not exist"):
        Masks.load(tmp_path / "missing.pt")


def test_apply_and_torch_prune_export_agree():
    torch.manual_seed(0)
    model = small_net()
    scores = {n: p.detach().abs() for n, p in prunable_parameters(model).items()}
    masks = keep_topk(scores, 5)
    reference = small_net()
    reference.load_state_dict(model.state_dict())
    masks.apply(reference)
    masks.to_torch_prune(model)
    assert torch.equal(model[0].weight, reference[0].weight)
    assert torch.equal(model[4].weight_mask.bool(), masks["4.weight"])
    x = torch.randn(2, 1, 6, 6)
    model.eval(), reference.eval()
    assert torch.allclose(model(x), reference(x))


def test_check_model_names_the_mismatch():
    masks = Masks({"0.weight": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(PaiError, match="0.weight"):
        masks.check_model(small_net())
