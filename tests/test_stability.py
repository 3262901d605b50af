"""Linear mode connectivity: the instability of known paths, BatchNorm recomputation, the runs."""

from __future__ import annotations

import argparse
import dataclasses

import pandas as pd
import pytest
import torch
from torch import nn

import pai.training.record
from pai.cli import stability as stability_cli
from pai.core.errors import PaiError
from pai.data.loading import Split, load_dataset
from pai.experiments.stability import (
    PATH_COLUMNS,
    StabilityConfig,
    alphas_of,
    instability,
    interpolate,
    path_errors,
    recompute_batch_norm,
    run_stability,
)
from pai.models import build_model
from pai.pruning.masks import keep_topk
from pai.training.config import TrainConfig
from pai.training.loop import state_copy


def test_instability_is_the_largest_error_minus_the_mean_of_the_ends():
    assert instability([0.1, 0.3, 0.2]) == pytest.approx(0.3 - 0.15)
    assert instability([0.2, 0.2]) == 0
    assert instability([0.1, 0.05, 0.3]) == pytest.approx(0.3 - 0.2)  # the end is the max
    with pytest.raises(PaiError):
        instability([0.1])


def test_interpolation_is_exact_at_the_ends_and_linear_between():
    a = {"w": torch.tensor([1.0, -2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 2.0]), "n": torch.tensor(7)}
    assert torch.equal(interpolate(a, b, 0.0)["w"], a["w"])
    assert torch.equal(interpolate(a, b, 1.0)["w"], b["w"])
    assert torch.equal(interpolate(a, b, 0.25)["w"], torch.tensor([1.5, -1.0]))
    assert interpolate(a, b, 0.5)["n"] == 3  # counters are not interpolated


def _bump_net() -> tuple[nn.Module, dict, dict, Split]:
    """logit0 = 0.3, logit1 = w2 * w1 * x, every label 1. A has w1 = w2 = 1 and B has w1 = w2
    = -1: both compute x, but the point a of the path computes (1 - 2a)^2 x."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(1, 1, bias=False), nn.Linear(1, 2))
    with torch.no_grad():
        model[2].bias.copy_(torch.tensor([0.3, 0.0]))
    first = {k: v.clone() for k, v in model.state_dict().items()}
    first["1.weight"] = torch.tensor([[1.0]])
    first["2.weight"] = torch.tensor([[0.0], [1.0]])
    second = {
        **first,
        "1.weight": torch.tensor([[-1.0]]),
        "2.weight": torch.tensor([[0.0], [-1.0]]),
    }
    x = torch.tensor([0.5, 1.0, 2.0, 4.0]).reshape(4, 1, 1, 1)
    return model, first, second, Split(x, torch.ones(4, dtype=torch.long), 2, (0.0,))


def test_a_hand_built_path_has_its_known_bump():
    model, first, second, test = _bump_net()
    # a = 0, 1/4, 1/2, 3/4, 1: (1 - 2a)^2 = 1, 1/4, 0, 1/4, 1; x (1 - 2a)^2 > 0.3 holds for
    # every x at the ends, for x = 2 and 4 at a = 1/4 and 3/4, for none at a = 1/2
    errors = path_errors(model, first, second, alphas_of(5), test)
    assert errors == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0])
    assert instability(errors) == pytest.approx(1.0)
    quarter = path_errors(model, first, second, [0.0, 0.25, 0.75, 1.0], test)
    assert instability(quarter) == pytest.approx(0.5)


def test_two_identical_weight_vectors_have_instability_zero():
    model = build_model("lenet300", "mnist", seed=0)
    state = state_copy(model)
    x = torch.randn(50, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    test = Split(x, torch.arange(50) % 10, 10, (0.0,))
    errors = path_errors(model, state, state, alphas_of(7), test)
    assert len(set(errors)) == 1 and instability(errors) == 0


def test_batch_norm_statistics_are_recomputed_as_the_average_of_the_batches():
    model = nn.Sequential(nn.BatchNorm1d(3))
    model.eval()
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(n, 3, generator=generator) * 2 + 1, None) for n in (8, 5)]
    recompute_batch_norm(model, batches)
    norm = model[0]
    means = torch.stack([x.mean(0) for x, _ in batches])
    variances = torch.stack([x.var(0) for x, _ in batches])  # unbiased, as BatchNorm keeps
    assert torch.allclose(norm.running_mean, means.mean(0), atol=1e-6)
    assert torch.allclose(norm.running_var, variances.mean(0), atol=1e-6)
    assert norm.momentum == 0.1 and not model.training  # restored


def test_config_is_checked():
    train = TrainConfig(budget="10it")
    with pytest.raises(PaiError, match="points"):
        StabilityConfig("lenet300", "mnist", train, points=1)
    with pytest.raises(PaiError, match="compression"):
        StabilityConfig("lenet300", "mnist", train, method="magnitude")
    with pytest.raises(PaiError, match="not both"):
        StabilityConfig("lenet300", "mnist", train, masks="m.pt", method="magnitude", compression=2)
    assert StabilityConfig("lenet300", "mnist", train, rewinds=("5", "1ep")).rewinds == (
        "5it",
        "1ep",
    )


@pytest.fixture(scope="module")
def mnist_small(data_root):
    data = load_dataset("mnist", root=data_root, device="cpu")

    def head(split: Split, n: int) -> Split:
        return Split(split.x[:n], split.y[:n], split.num_classes, split.pad_value)

    return dataclasses.replace(data, train=head(data.train, 600), test=head(data.test, 500))


TRAIN = TrainConfig(budget="12it", batch_size=100, lr=0.05, eval_every="12it")


def test_sparse_copies_start_from_the_masked_parent_and_write_the_contract(
    mnist_small, tmp_path, monkeypatch
):
    model = build_model("lenet300", "mnist", seed=0)
    generator = torch.Generator().manual_seed(0)
    masks = keep_topk({n: torch.rand(p.shape, generator=generator) for n, p in
                       model.named_parameters() if n.endswith("weight")}, 4.0)  # fmt: skip
    masks.save(tmp_path / "masks.pt")
    config = StabilityConfig(
        "lenet300", "mnist", TRAIN, rewinds=("0", "6it"), points=3, masks=str(tmp_path / "masks.pt")
    )
    table, path = run_stability(config, tmp_path / "out", data=mnist_small, device="cpu")
    assert list(table[["rewind", "seed"]].itertuples(index=False, name=None)) == [
        ("0it", 0),
        ("6it", 0),
    ]
    for column in ("rewind", "seed", "instability", "error_start", "error_end", "max_error"):
        assert column in table.columns
    assert tuple(path.columns) == PATH_COLUMNS and len(path) == 2 * 3
    assert (table["density"] == masks.density).all()
    assert (table["instability"] >= 0).all()
    runs = tmp_path / "out" / "runs"
    parent = next(runs.glob("stability-parent-*"))
    snapshot = torch.load(parent / "snapshot-6it.pt", weights_only=True)
    copies = sorted(runs.glob("stability-copy-*"))
    assert len(copies) == 4
    starts = [torch.load(c / "start.pt", weights_only=True) for c in copies]
    finals = [torch.load(c / "final.pt", weights_only=True) for c in copies]
    expected = {k: v * masks[k] if k in masks else v for k, v in snapshot.items()}
    matching = [
        i for i, s in enumerate(starts) if all(torch.equal(s[k], expected[k]) for k in expected)
    ]
    assert len(matching) == 2  # both copies of k = 6it start from m * W_6
    for final in finals:
        for name, mask in masks.items():
            assert (final[name][~mask] == 0).all()
    first, second = (finals[i] for i in matching)
    assert not torch.equal(first["fc.weight"], second["fc.weight"])  # other data orders
    for name in ("stability.csv", "path.csv", "error_along_path.png", "instability_vs_rewind.png"):
        assert (tmp_path / "out" / name).is_file()
    again = pd.read_csv(tmp_path / "out" / "stability.csv")
    assert again["instability"].tolist() == pytest.approx(table["instability"].tolist())

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(pai.training.record, "train_into", refuse)
    rerun, _ = run_stability(config, tmp_path / "out", data=mnist_small, device="cpu")
    assert rerun["instability"].tolist() == table["instability"].tolist()


def test_a_rewind_step_outside_the_budget_is_refused(mnist_small, tmp_path):
    config = StabilityConfig("lenet300", "mnist", TRAIN, rewinds=("12it",))
    with pytest.raises(PaiError, match="rewind step 12it"):
        run_stability(config, tmp_path, data=mnist_small, device="cpu")


def test_cli_help_and_contract_flags():
    parser = argparse.ArgumentParser(prog="pai")
    stability_cli.register(parser.add_subparsers())
    text = parser._subparsers._group_actions[0].choices["stability"].format_help()
    for flag in ("--rewind", "--seeds", "--epochs", "--steps", "--masks", "--method",
                 "--compression", "--out", "--no-bn-recompute"):  # fmt: skip
        assert flag in text
