"""Ticket transfer (Morcos et al. 2019): the source's mask and weights, a fresh dense output layer."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from pai.core.errors import PaiError
from pai.data.loading import Split, load_dataset
from pai.experiments.compare import CompareConfig, run_comparison
from pai.models import build_model
from pai.pruning.masks import Masks, keep_topk
from pai.search.methods import get_search, method_names
from pai.search.protocol import SearchContext, SearchRequest
from pai.search.ticket import Ticket
from pai.search.transfer import TransferOptions, transplant
from pai.training.config import TrainConfig
from pai.training.loop import state_copy


def test_transplant_takes_the_output_layer_from_the_target_and_leaves_it_dense():
    source = build_model("lenet300", "mnist", seed=3)
    target = build_model("lenet300", "mnist", seed=4)
    scores = {n: p.detach().abs() for n, p in source.named_parameters() if n.endswith("weight")}
    masks = keep_topk(scores, 10.0)
    state = {k: v * masks[k] if k in masks else v for k, v in state_copy(source).items()}
    moved = transplant(Ticket(masks, state, source_state=state_copy(source)), target)
    initial = target.state_dict()
    assert moved.masks["fc.weight"].all()
    assert torch.equal(moved.state["fc.weight"], initial["fc.weight"])
    assert torch.equal(moved.state["fc.bias"], initial["fc.bias"])
    for name in ("features.1.weight", "features.1.bias", "features.3.weight"):
        assert torch.equal(moved.state[name], state[name])
    for name in ("features.1.weight", "features.3.weight"):
        assert torch.equal(moved.masks[name], masks[name])
    assert moved.masks.kept == masks.kept - int(masks["fc.weight"].sum()) + 1000
    assert torch.equal(moved.source_state["fc.weight"], initial["fc.weight"])


def test_transplant_refuses_a_body_of_another_shape():
    source = build_model("lenet300", "mnist", seed=0)
    target = build_model("lenet300", "cifar10", seed=0)  # 3x32x32 inputs: another first layer
    ticket = Ticket(Masks.dense(source), state_copy(source))
    with pytest.raises(PaiError, match="features.1.weight"):
        transplant(ticket, target)


def test_options_and_source_request():
    assert "transfer" in method_names()
    with pytest.raises(PaiError):
        TransferOptions(method="transfer")
    search = get_search("transfer")
    options = TransferOptions(method="imp", dataset="fashion-mnist", optimizer="adam", lr=1e-3)
    request = SearchRequest("lenet300", "mnist", 8.0, 1, TrainConfig(), options=options)
    found, source = search.source(request)
    assert found.name == "imp" and source.dataset == "fashion-mnist"
    assert source.train.optimizer == "adam" and source.train.lr == 1e-3
    assert source.compression == 8.0 and source.seed == 1
    plain = dataclasses.replace(request, options=TransferOptions(method="imp"))
    assert search.identity(plain).options != search.identity(request).options


@pytest.fixture(scope="module")
def small(data_root):
    def cut(name):
        data = load_dataset(name, root=data_root, device="cpu")

        def head(split: Split, n: int) -> Split:
            return Split(split.x[:n], split.y[:n], split.num_classes, split.pad_value)

        return dataclasses.replace(data, train=head(data.train, 600), test=head(data.test, 500))

    return cut("mnist"), cut("fashion-mnist")


def test_a_magnitude_ticket_from_fashion_mnist_is_the_targets_own_but_for_the_output(
    small, tmp_path
):
    mnist, fashion = small
    search = get_search("transfer")
    options = TransferOptions(method="magnitude", dataset="fashion-mnist")
    request = SearchRequest("lenet300", "mnist", 10.0, 0, TrainConfig(), options=options)
    context = SearchContext(mnist, torch.device("cpu"), tmp_path)
    context.cache[("transfer data", "fashion-mnist", None)] = fashion  # the cut split
    moved = search.find(request, context)
    own = get_search("magnitude").find(
        dataclasses.replace(request, options=None),
        SearchContext(mnist, torch.device("cpu"), tmp_path),
    )
    for name in ("features.1.weight", "features.3.weight"):
        assert torch.equal(moved.masks[name], own.masks[name])  # |w| of one seed's init
    assert moved.masks["fc.weight"].all() and not own.masks["fc.weight"].all()


def test_compare_trains_transferred_tickets_beside_their_shuffled_masks(
    small, tmp_path, monkeypatch
):
    import pai.data.loading as loading

    mnist, fashion = small
    monkeypatch.setattr(
        loading,
        "load_for_training",
        lambda name, **kwargs: fashion if name == "fashion-mnist" else mnist,
    )
    config = CompareConfig(
        "lenet300",
        "mnist",
        ("imp", "transfer"),
        (4.0,),
        TrainConfig(budget="6it", batch_size=100, eval_every="6it"),
        sanity=("shuffle",),
        options={"imp": {"rate": 0.5}, "transfer": {"dataset": "fashion-mnist"}},
    )
    table = run_comparison(config, tmp_path, device="cpu", progress=False)
    transfer = table[table["method"] == "transfer"]
    assert set(transfer["variant"]) == {"original", "shuffle"}
    assert (transfer["compression"] < 4.0).all() and (transfer["compression"] > 3.9).all()
    assert (tmp_path / "runs" / "transfer" / "fashion-mnist" / "imp").is_dir()
    assert table["untrained_test_accuracy"].notna().all()
    assert "source_train" in pd.read_csv(tmp_path / "runs.csv")["options"].iloc[-1]
