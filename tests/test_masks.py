"""Masks: exact counts, deterministic ties, live-only ranking, file format, torch.prune export."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pai.core.errors import PaiError
from pai.pruning.masks import Masks, keep_counts, keep_topk, kept_count, prunable_parameters


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


def stable_sort_reference(scores, live, k):
    """The definition: a stable descending sort of the live scores, layers concatenated in
    order, cut at k (computed in float64, independently of keep_topk)."""
    names = list(scores)
    flat = torch.cat([scores[n].reshape(-1).double() for n in names])
    alive = torch.cat([live[n].reshape(-1) for n in names]).nonzero().squeeze(1)
    order = torch.sort(flat[alive], descending=True, stable=True).indices[:k]
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[alive[order]] = True
    out, start = {}, 0
    for n in names:
        out[n] = keep[start : start + scores[n].numel()].reshape(scores[n].shape)
        start += scores[n].numel()
    return out


@pytest.mark.parametrize("sizes", [(7, 30, 1), (150_000, 5, 200_000)])  # the second: > 4 x 2^16
@pytest.mark.parametrize("dtypes", ["float32", "mixed"])
def test_keep_topk_is_a_stable_sort_cut_at_k(sizes, dtypes):
    g = torch.Generator().manual_seed(len(sizes) + sum(sizes))
    kinds = [torch.float16, torch.float64, torch.bfloat16] if dtypes == "mixed" else [torch.float32]
    scores, live = {}, {}
    for i, size in enumerate(sizes):
        coarse = (torch.randn(size, generator=g) * 40).round()  # many ties at every threshold
        scores[f"l{i}"] = coarse.to(kinds[i % len(kinds)])
        live[f"l{i}"] = torch.rand(size, generator=g) < 0.7
        scores[f"l{i}"][~live[f"l{i}"]] = float("nan")  # dead weights' scores are never read
    total = sum(sizes)
    for compression in (1.2, 3, 10, min(1000, total)):
        k = kept_count(total, compression)
        masks = keep_topk(scores, compression, live=live)
        expected = stable_sort_reference(scores, live, k)
        assert all(torch.equal(masks[n], expected[n]) for n in scores)
        assert masks.kept == min(k, sum(int(alive.sum()) for alive in live.values()))
        fresh = Masks({n: m.clone() for n, m in masks.items()})
        assert masks.layer_kept() == fresh.layer_kept()  # the remembered counts are the true ones


def test_keep_topk_is_exact_when_the_threshold_sample_misleads():
    """The k-th largest is bracketed from a strided sample; scores that are high exactly at the
    sampled positions make the bracket miss, and every live score must then be ranked."""
    total = 300_000
    stride = total // 2**16
    g = torch.Generator().manual_seed(3)
    scores = torch.rand(total, generator=g)
    scores[::stride] += 10  # the sample sees only these
    for compression in (1.5, 2, 3):
        masks = keep_topk({"a": scores}, compression)
        k = kept_count(total, compression)
        expected = stable_sort_reference(
            {"a": scores}, {"a": torch.ones(total, dtype=torch.bool)}, k
        )
        assert torch.equal(masks["a"], expected["a"]) and masks.kept == k


def test_keep_counts_and_layerwise_match_the_reference_per_layer():
    g = torch.Generator().manual_seed(5)
    scores = {"a": torch.randint(0, 3, (40,), generator=g).double(), "b": torch.rand(6, 5)}
    live = {"a": torch.rand(40, generator=g) < 0.5, "b": torch.ones(6, 5, dtype=torch.bool)}
    masks = keep_counts(scores, {"a": 7, "b": 30}, live)
    assert torch.equal(masks["a"], stable_sort_reference({"a": scores["a"]}, live, 7)["a"])
    assert masks["b"].all() and masks.layer_kept() == {"a": 7, "b": 30}
    assert keep_counts(scores, {"a": 100, "b": 0}, live).layer_kept() == {
        "a": int(live["a"].sum()),
        "b": 0,
    }


def test_kept_counts_follow_in_place_changes():
    """Counts are remembered, never stale: a mask changed in place (directly, through a view or
    a detached alias) is counted again."""
    masks = keep_topk({"a": torch.arange(10.0), "b": torch.arange(6.0).reshape(2, 3)}, 2)
    assert masks.layer_kept() == {"a": 6, "b": 2}  # 9, 8, 7, 6, 5, 4 and 5, 4
    masks["a"][0] = True
    assert masks.layer_kept()["a"] == 7 and masks.kept == 9
    masks["b"].view(-1)[:] = False
    assert masks.layer_kept()["b"] == 0 and masks.compression == pytest.approx(16 / 7)
    masks["a"].detach().fill_(True)
    assert masks.layer_kept()["a"] == 10
    dense = Masks.dense(small_net())
    assert dense.kept == dense.total
    dense["0.weight"].zero_()
    assert dense.layer_kept()["0.weight"] == 0
    moved = dense.to("cpu")
    assert moved.layer_kept() == dense.layer_kept()
    with torch.inference_mode():  # inference tensors have no version counter: never remembered
        frozen = Masks({"a": torch.ones(4, dtype=torch.bool)})
        assert frozen.kept == 4
    assert frozen.kept == 4


def test_apply_leaves_fully_kept_layers_unwritten():
    model = small_net()
    masks = Masks.dense(model)
    masks = Masks({**masks, "4.weight": torch.rand(3, 32, generator=torch.Generator()) < 0.5})
    dense_layer, pruned_layer = model[0].weight, model[4].weight
    before, expected = dense_layer.detach().clone(), (pruned_layer * masks["4.weight"]).detach()
    version = dense_layer._version
    masks.apply(model)
    assert dense_layer._version == version and torch.equal(dense_layer, before)
    assert torch.equal(pruned_layer, expected)
