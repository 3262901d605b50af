"""Weight variants of a ticket (Zhou et al. 2019; Frankle, Schwab & Morcos 2020), by definition."""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections import Counter

import pandas as pd
import pytest
import torch

import pai.data.loading as loading
from pai.cli import compare as compare_cli
from pai.core.errors import PaiError
from pai.data.loading import Split, load_dataset
from pai.experiments.compare import CompareConfig, run_comparison
from pai.models import build_model
from pai.pruning.masks import keep_topk
from pai.report.schema import VARIANTS, WEIGHT_VARIANTS, check_variant
from pai.search.ablations import ablate
from pai.search.ticket import Ticket
from pai.testing import toy_conv_net
from pai.training.config import TrainConfig
from pai.training.loop import state_copy, train

SEED = 7


def rewound_ticket(model, compression=2.0, steps_from_init=0.2):
    """A ticket of `model`: random mask, start weights = init plus a small seeded shift (as if
    rewound to some step k > 0), so that the init and the ticket's weights differ."""
    initial = state_copy(model)
    generator = torch.Generator().manual_seed(1)
    masks = keep_topk(
        {n: torch.rand(p.shape, generator=generator) for n, p in model.named_parameters()
         if n.endswith("weight") and p.dim() > 1},
        compression,
        "layerwise",
    )  # fmt: skip
    source = {
        k: v + steps_from_init * torch.randn(v.shape, generator=generator) if k in masks else v
        for k, v in initial.items()
    }
    state = {k: v * masks[k] if k in masks else v for k, v in source.items()}
    return Ticket(masks, state, source_state=source), initial


def variant(name, model_builder=toy_conv_net, compression=2.0):
    model = model_builder(0)
    ticket, initial = rewound_ticket(model, compression)
    ablated = ablate(ticket, name, model_builder(0), SEED)
    return ticket, initial, ablated


def kept_values(state, masks, name):
    return state[name][masks[name]]


@pytest.mark.parametrize("name", [v for v in WEIGHT_VARIANTS if v != "freeze_init"] + ["noise:0.5"])
def test_weight_variants_keep_the_mask_and_zero_pruned_weights_and_nothing_else(name):
    ticket, _, ablated = variant(name)
    assert ablated.masks == ticket.masks
    for key, value in ablated.state.items():
        if key in ticket.masks:
            assert (value[~ticket.masks[key]] == 0).all(), key
        else:
            assert torch.equal(value, ticket.state[key]), key  # biases, BatchNorm untouched
    again = ablate(ticket, name, toy_conv_net(0), SEED).state
    assert all(torch.equal(again[k], ablated.state[k]) for k in again)  # seeded


def test_sign_constant_keeps_every_sign_and_one_magnitude_per_layer():
    ticket, initial, ablated = variant("sign_constant")
    for name in ticket.masks:
        before, after = (
            kept_values(ticket.state, ticket.masks, name),
            kept_values(ablated.state, ticket.masks, name),
        )
        assert torch.equal(before.sign(), after.sign())
        sigma = initial[name].double().std(correction=0).item()
        assert torch.allclose(after.abs().double(), torch.full_like(after.double(), sigma))


def test_signs_and_magnitudes_from_init_take_one_half_from_step_zero():
    ticket, initial, signs = variant("signs_from_init")
    _, _, magnitudes = variant("magnitudes_from_init")
    for name, mask in ticket.masks.items():
        w, w0 = ticket.state[name][mask], initial[name][mask]
        assert torch.equal(signs.state[name][mask], w.abs() * w0.sign())
        assert torch.equal(magnitudes.state[name][mask], w0.abs() * w.sign())
    # the start weights are not the init, so both variants really change something
    assert any(not torch.equal(signs.state[n], ticket.state[n]) for n in ticket.masks)
    assert any(not torch.equal(magnitudes.state[n], ticket.state[n]) for n in ticket.masks)


def test_sign_flip_keeps_magnitudes_and_flips_about_half_the_signs():
    ticket, _, ablated = variant("sign_flip", lambda seed: build_model("lenet300", "mnist", seed))
    flipped = total = 0
    for name, mask in ticket.masks.items():
        w, v = ticket.state[name][mask], ablated.state[name][mask]
        assert torch.equal(w.abs(), v.abs())
        flipped += int((w.sign() != v.sign()).sum())
        total += len(w)
    assert abs(flipped / total - 0.5) < 0.01  # 133,100 fair coins


def test_permute_layer_keeps_each_layers_multiset_and_moves_values_across_filters():
    ticket, _, ablated = variant("permute_layer")
    moved_across_filters = False
    for name, mask in ticket.masks.items():
        before = sorted(ticket.state[name][mask].tolist())
        assert sorted(ablated.state[name][mask].tolist()) == before
        rows = [sorted(ticket.state[name][o][mask[o]].tolist()) for o in range(mask.shape[0])]
        new_rows = [sorted(ablated.state[name][o][mask[o]].tolist()) for o in range(mask.shape[0])]
        moved_across_filters |= rows != new_rows
    assert moved_across_filters


def test_permute_filter_keeps_each_filters_multiset_and_moves_within_filters():
    ticket, _, ablated = variant("permute_filter")
    moved = False
    for name, mask in ticket.masks.items():
        for o in range(mask.shape[0]):
            before, after = ticket.state[name][o][mask[o]], ablated.state[name][o][mask[o]]
            assert sorted(before.tolist()) == sorted(after.tolist())
            moved |= not torch.equal(before, after)
    assert moved


def test_permute_global_keeps_the_networks_multiset_and_moves_values_across_layers():
    ticket, _, ablated = variant("permute_global")
    names = list(ticket.masks)
    pooled = lambda state: sorted(  # noqa: E731
        v for n in names for v in state[n][ticket.masks[n]].tolist()
    )
    assert pooled(ablated.state) == pooled(ticket.state)
    changed_layers = [
        n
        for n in names
        if sorted(ablated.state[n][ticket.masks[n]].tolist())
        != sorted(ticket.state[n][ticket.masks[n]].tolist())
    ]
    assert len(changed_layers) == len(names)  # every layer got values from elsewhere


def test_permute_same_sign_keeps_every_sign_and_each_signs_multiset_per_layer():
    ticket, _, ablated = variant("permute_same_sign")
    moved = False
    for name, mask in ticket.masks.items():
        before, after = ticket.state[name][mask], ablated.state[name][mask]
        assert torch.equal(before.sign(), after.sign())
        for sign in (1, -1):
            assert Counter(before[before.sign() == sign].tolist()) == Counter(
                after[after.sign() == sign].tolist()
            )
        moved |= not torch.equal(before, after)
    assert moved


def test_noise_has_the_scale_times_the_layers_init_std_per_layer():
    def lenet(seed):
        return build_model("lenet300", "mnist", seed)

    scale = 0.5
    ticket, initial, ablated = variant(f"noise:{scale}", lenet)
    generator = torch.Generator().manual_seed(SEED)  # the documented draw order: layer by layer
    for name, mask in ticket.masks.items():
        sigma = initial[name].double().std(correction=0).item()
        noise = (ablated.state[name][mask] - ticket.state[name][mask]).double()
        expected = torch.randn(int(mask.sum()), generator=generator, dtype=torch.float64)
        assert torch.allclose(noise, scale * sigma * expected, atol=1e-6)
        fan_in = mask[0].numel()
        assert sigma == pytest.approx(math.sqrt(2 / fan_in), rel=0.05)  # Kaiming normal
        if mask.sum() > 10_000:  # a statistical check where the estimate is tight
            assert noise.std().item() == pytest.approx(scale * sigma, rel=0.02)


def test_variant_names_are_checked_and_canonical():
    assert check_variant("noise:0.50") == "noise:0.5"
    for bad in ("noise:0", "noise:-1", "noise:x", "noise:", "permute", "flip"):
        with pytest.raises(PaiError):
            check_variant(bad)
    config = CompareConfig(
        "lenet300", "mnist", ("magnitude",), (2.0,), TrainConfig(), sanity=("noise:1",)
    )
    assert config.sanity == ("noise:1.0",)


def test_compare_help_lists_every_variant_name():
    parser = argparse.ArgumentParser(prog="pai")
    compare_cli.register(parser.add_subparsers())
    text = " ".join(parser._subparsers._group_actions[0].choices["compare"].format_help().split())
    for name in VARIANTS:
        assert name in text, name
    assert "--variants" in text


@pytest.fixture(scope="module")
def mnist_small(data_root):
    data = load_dataset("mnist", root=data_root, device="cpu")

    def head(split: Split, n: int) -> Split:
        return Split(split.x[:n], split.y[:n], split.num_classes, split.pad_value)

    return dataclasses.replace(data, train=head(data.train, 600), test=head(data.test, 500))


def test_freeze_init_holds_pruned_weights_at_their_start_values_through_momentum(mnist_small):
    model = build_model("lenet300", "mnist", seed=0)
    ticket, _ = rewound_ticket(model, compression=4.0)
    frozen = ablate(ticket, "freeze_init", build_model("lenet300", "mnist", seed=0), SEED)
    assert frozen.masks == ticket.masks and frozen.frozen is not None
    net = build_model("lenet300", "mnist", seed=0)
    net.load_state_dict(frozen.state)
    config = TrainConfig(budget="12it", batch_size=100, lr=0.1, momentum=0.9, weight_decay=5e-3)
    train(net, mnist_small, config, masks=frozen.masks, frozen=frozen.frozen, progress=False)
    params = dict(net.named_parameters())
    for name, mask in ticket.masks.items():
        source = ticket.source_state[name]
        assert torch.equal(params[name].detach()[~mask], source[~mask])  # frozen, not zero
        assert (source[~mask] != 0).all()
        assert not torch.equal(params[name].detach()[mask], source[mask])  # the rest trained


def test_compare_rows_carry_untrained_accuracy_and_train_every_variant(
    tmp_path, mnist_small, monkeypatch
):
    variants = ("sign_constant", "freeze_init", "permute_layer", "noise:0.5")
    config = CompareConfig(
        "lenet300",
        "mnist",
        ("magnitude",),
        (4.0,),
        TrainConfig(budget="6it", batch_size=100, eval_every="6it"),
        sanity=variants,
    )
    # the real MNIST, cut to 600 / 500 examples
    monkeypatch.setattr(loading, "load_for_training", lambda *args, **kwargs: mnist_small)
    table = run_comparison(config, tmp_path, device="cpu", progress=False)
    assert set(table["variant"]) == {"original", *variants}
    assert table["untrained_test_accuracy"].between(0, 1).all()
    rows = table[table["method"] == "magnitude"].set_index("variant")
    assert (
        rows.loc["original", "untrained_test_accuracy"]
        != rows.loc["sign_constant", "untrained_test_accuracy"]
    )
    assert (tmp_path / "runs").is_dir() and any(
        p.name.startswith("magnitude-noise_0.5-") for p in (tmp_path / "runs").iterdir()
    )
    written = pd.read_csv(tmp_path / "runs.csv")
    assert "untrained_test_accuracy" in written.columns
