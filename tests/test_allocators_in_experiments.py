"""Every density allocator in IMP's level plan and in the comparison harness."""

from __future__ import annotations

import math

import pytest
import torch

from pai.experiments.compare import CompareConfig, plan_runs
from pai.models import build_model
from pai.pruning.allocators import layer_counts
from pai.pruning.levels import pruning_plan
from pai.pruning.masks import Masks, kept_count, prunable_parameters
from pai.training.config import TrainConfig


def lenet300_layers():
    prunable = prunable_parameters(build_model("lenet300", "mnist", seed=0))
    sizes = {name: p.numel() for name, p in prunable.items()}
    shapes = {name: tuple(p.shape) for name, p in prunable.items()}
    return sizes, shapes


@pytest.mark.parametrize("scope", ["erk", "er", "smart-ratio"])
def test_an_allocated_imp_plan_keeps_the_allocators_counts_level_by_level(scope):
    sizes, shapes = lenet300_layers()
    total = sum(sizes.values())
    plan = pruning_plan(sizes, levels=3, rate=0.5, scope=scope, targets=(10.0,), shapes=shapes)
    assert plan.groups == tuple((name,) for name in sizes)
    previous = dict(sizes)
    compressions = [total / math.floor(total * 0.5**level + 0.5) for level in (1, 2, 3)] + [10.0]
    for level, compression in enumerate(compressions, start=1):
        expected = layer_counts(scope, shapes, compression, previous)
        assert dict(zip(sizes, plan.kept[level], strict=True)) == expected
        assert all(plan.kept[level][i] <= plan.kept[level - 1][i] for i in range(len(sizes)))
        previous = expected
    assert plan.level_kept(len(plan) - 1) == kept_count(total, 10.0)  # the target, exactly


def test_an_allocated_plan_needs_shapes_and_refuses_a_half_rate_output():
    sizes, _ = lenet300_layers()
    with pytest.raises(Exception, match="needs the shapes"):
        pruning_plan(sizes, levels=2, scope="erk")
    with pytest.raises(Exception, match="half-rate output layer"):
        pruning_plan(sizes, levels=2, scope="erk", output_half_rate=True)
    with pytest.raises(Exception, match="unknown scope 'nope'"):
        pruning_plan(sizes, levels=2, scope="nope")


def test_compare_plans_any_allocator_and_records_a_mask_files_digest(tmp_path):
    model = build_model("lenet300", "mnist", seed=0)
    masks = Masks(
        {name: torch.rand(p.shape, generator=torch.Generator().manual_seed(1)) < 0.3
         for name, p in prunable_parameters(model).items()}
    )  # fmt: skip
    masks.save(tmp_path / "m.pt")
    for scope in ("erk", f"from-masks:{tmp_path / 'm.pt'}"):
        config = CompareConfig(
            "lenet300", "mnist", ("random", "imp"), (4.0,), TrainConfig(budget="5it"), scope=scope
        )
        scopes = {spec.scope for spec in plan_runs(config) if spec.method != "dense"}
        (recorded,) = scopes
        assert recorded == "erk" if scope == "erk" else recorded.startswith("from-masks:")
        assert str(tmp_path) not in recorded  # the file's content, not its path


def test_a_comparison_under_erk_trains_masks_with_the_allocators_counts(tmp_path, data_root):
    from pai.cli import main

    assert main([
        "compare", "--model", "lenet300", "--dataset", "mnist", "--methods", "magnitude,imp",
        "--compressions", "4", "--scope", "erk", "--steps", "5", "--batch-size", "50",
        "--train-per-class", "10", "--imp-rate", "0.5", "--data-root", str(data_root),
        "--device", "cpu", "--out", str(tmp_path),
    ]) == 0  # fmt: skip
    _, shapes = lenet300_layers()
    expected = layer_counts("erk", shapes, 4.0)
    for method in ("magnitude", "imp"):
        (run,) = tmp_path.glob(f"runs/{method}-original-*")
        assert Masks.load(run / "masks.pt").layer_kept() == expected
