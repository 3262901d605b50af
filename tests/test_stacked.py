"""Stacked training: every run of a stack ends where `train` alone takes it, bit for bit.

On a CPU the stacked layers call, for each run, the kernels its solo run calls (convolutions
and Linear weight gradients once per run; the batched matmuls they share round as `addmm`
does), so 50 steps of lenet300, conv2, vgg11 and resnet20 with SGD (momentum, Nesterov,
weight decay) or Adam end where the solo runs end: the gap measured here is 0, asserted to
`RTOL`. That is what makes the check meaningful for the BatchNorm nets: on batches of 2 to 4
their training is chaotic (a 1e-7 perturbation of a solo run grows to O(1) in 50 steps), so
any rounding difference would show. The batched kernels CUDA uses (grouped convolutions, a
batched matmul for weight gradients) round like the solo ones only with one thread and
without oneDNN (`pinned_kernels`); the heavy cases run on one thread (`one_thread`), which
changes nothing in the comparison (both sides use it) and keeps them fast on a busy machine.

The gap of a tensor is max |stacked - solo| / max |solo| (absolute when the solo one is 0).
"""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from torch import nn

import pai
from pai.core.errors import PaiError
from pai.data.loading import Dataset, Split, load_dataset, training_subset
from pai.models import available_models, build_model
from pai.pruning.masks import Masks, prunable_parameters
from pai.training import stacked
from pai.training.config import TrainConfig
from pai.training.loop import train
from pai.training.stacked import (
    CPU_STACK_SIZE,
    default_stack_size,
    stack_modules,
    stack_size_for_memory,
    train_many,
    unstackable_reason,
)

RTOL = 1e-6


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def pinned_kernels():
    """One thread and no oneDNN, restored afterwards."""
    threads, onednn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False
    yield
    torch.set_num_threads(threads)
    torch.backends.mkldnn.enabled = onednn


def _small(data: Dataset, per_class: int, test_size: int) -> Dataset:
    """A class-balanced training subset and the first `test_size` test examples."""
    cut = training_subset(data, per_class)
    test = data.test
    return Dataset(
        cut.spec,
        cut.root,
        cut.train,
        Split(test.x[:test_size], test.y[:test_size], test.num_classes, test.pad_value),
    )


@pytest.fixture(scope="module")
def mnist(data_root):
    return _small(load_dataset("mnist", root=data_root, device="cpu"), 10, 50)


@pytest.fixture(scope="module")
def fashion(data_root):
    return _small(load_dataset("fashion-mnist", root=data_root, device="cpu"), 10, 50)


def _masks(model: nn.Module, seeds: tuple[int, ...]) -> list[Masks | None]:
    """Dense, random at 10x, and random at 100x with its second prunable layer fully pruned."""
    sparse = pai.prune(copy.deepcopy(model), "random", 10, seed=seeds[1])
    sparser = dict(pai.prune(copy.deepcopy(model), "random", 100, seed=seeds[2]))
    layer = list(prunable_parameters(model))[1]
    sparser[layer] = torch.zeros_like(sparser[layer])
    return [None, sparse, Masks(sparser)]


def _gap(solo: torch.Tensor, other: torch.Tensor) -> float:
    if not solo.is_floating_point():
        return 0.0 if torch.equal(solo, other) else float("inf")
    scale = solo.double().abs().max().item()
    gap = (solo.double() - other.double()).abs().max().item()
    return gap / scale if scale else gap


def _worst_gap(solo: nn.Module | dict, other: nn.Module | dict) -> tuple[float, str]:
    own = solo if isinstance(solo, dict) else solo.state_dict()
    mine = other if isinstance(other, dict) else other.state_dict()
    assert list(own) == list(mine)
    return max((_gap(own[k], mine[k]), k) for k in own)


def _assert_same_runs(solo_models, models, solo_results, results, masks, test, rtol, size):
    """Weights, buffers, pruned zeros, histories and metrics of each run against its solo run;
    test accuracies may differ by one example of `test`."""
    for run, (solo, mine) in enumerate(zip(solo_models, models, strict=True)):
        gap, name = _worst_gap(solo, mine)
        assert gap <= rtol, f"run {run} {name}: {gap:.3g}"
        if masks[run] is not None:
            params = dict(mine.named_parameters())
            for layer, mask in masks[run].items():
                assert torch.all(params[layer][~mask] == 0), (run, layer)
    one_example = 1.001 / len(test)
    for solo, mine in zip(solo_results, results, strict=True):
        assert set(mine.metrics) == set(solo.metrics) | {"stack_size"}
        assert mine.metrics["stack_size"] == size
        assert [r["step"] for r in mine.history] == [r["step"] for r in solo.history]
        for own, row in zip(solo.history, mine.history, strict=True):
            assert row["lr"] == own["lr"] and row["epoch"] == own["epoch"]
            assert abs(row["test_accuracy"] - own["test_accuracy"]) <= one_example
            for key in ("train_loss", "test_loss"):
                assert row[key] == pytest.approx(own[key], rel=max(rtol, 1e-6)), key
        for key in ("initial_train_loss", "steps", "epochs", "density", "start_step"):
            assert mine.metrics[key] == pytest.approx(solo.metrics[key], rel=1e-6), key


def _compare(data, name, config, seeds=(3, 4, 5), **extra):
    """Three runs of `name` (dense, 10x, 100x with a layer fully pruned) alone and stacked."""
    models = [build_model(name, data.spec.name, seed=s) for s in seeds]
    masks = _masks(models[0], seeds)
    solo_models = [copy.deepcopy(m) for m in models]
    extra.setdefault("stack_size", len(seeds))  # the CPU default leaves conv nets unstacked
    train_args = {k: v for k, v in extra.items() if k != "stack_size"}
    solo_results = [
        train(m, data, config.replace(seed=s), masks=k, progress=False, **train_args)
        for m, k, s in zip(solo_models, masks, seeds, strict=True)
    ]
    results = train_many(models, data, config, masks=masks, seeds=seeds, progress=False, **extra)
    return solo_models, models, solo_results, results, masks, data.test


SGD = dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
ADAM = dict(optimizer="adam", lr=1e-3, weight_decay=1e-4)
CASES = {  # name: (model, dataset fixture, batch size, optimizer)
    "lenet300-sgd": ("lenet300", "mnist", 60, SGD),
    "lenet300-adam": ("lenet300", "mnist", 60, ADAM),
    "conv2-sgd": ("conv2", "fashion", 4, SGD),
    "conv2-adam": ("conv2", "fashion", 4, ADAM),
    "vgg11-sgd": ("vgg11", "fashion", 2, SGD),
    "vgg11-adam": ("vgg11", "fashion", 2, ADAM),
    "resnet20-sgd": ("resnet20", "fashion", 4, SGD),
    "resnet20-adam": ("resnet20", "fashion", 4, ADAM),
}
SLOW = {"conv2-adam", "vgg11-sgd", "resnet20-adam"}


def _case_config(batch: int, optimizer: dict) -> TrainConfig:
    return TrainConfig(
        budget="50it", batch_size=batch, warmup="5it", eval_every="25it", **optimizer
    )


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in CASES],
)
def test_each_run_of_a_stack_is_its_solo_run(request, case):
    name, dataset, batch, optimizer = CASES[case]
    if name != "lenet300":  # lenet300 keeps the default thread count
        request.getfixturevalue("one_thread")
    runs = _compare(request.getfixturevalue(dataset), name, _case_config(batch, optimizer))
    _assert_same_runs(*runs, rtol=RTOL, size=3)


@pytest.mark.parametrize(
    "case", ["resnet20-sgd", "lenet300-adam", pytest.param("conv2-sgd", marks=pytest.mark.slow)]
)
def test_with_pinned_kernels_the_batched_kernels_give_the_solo_runs_too(
    request, pinned_kernels, monkeypatch, case
):
    """The grouped convolutions and batched weight gradients that CUDA uses, on the CPU."""
    monkeypatch.setitem(stacked.BATCHED_KERNELS, "cpu", True)
    name, dataset, batch, optimizer = CASES[case]
    runs = _compare(request.getfixturevalue(dataset), name, _case_config(batch, optimizer))
    _assert_same_runs(*runs, rtol=RTOL, size=3)


def test_stacks_split_resume_and_snapshot_like_solo_runs(mnist):
    """Three runs in stacks of two: augmentation draws, a start step with skipped batches and
    snapshots as in `train`; the last run, a stack of one, is trained by `train` itself."""
    config = TrainConfig(budget="12it", batch_size=30, augment=True, eval_every="6it", **SGD)
    extra = dict(start_at="5it", snapshot_at=("5it", "9it"), stack_size=2)
    solo_models, models, solo_results, results, masks, test = _compare(
        mnist, "lenet300", config, **extra
    )
    _assert_same_runs(
        solo_models[:2], models[:2], solo_results[:2], results[:2], masks, test, RTOL, 2
    )
    assert results[2].metrics["stack_size"] == 1
    assert _worst_gap(solo_models[2], models[2])[0] == 0
    for solo, mine in zip(solo_results, results, strict=True):
        assert set(mine.snapshots) == {"5it", "9it"}
        for step, state in mine.snapshots.items():
            assert _worst_gap(solo.snapshots[step], state)[0] <= RTOL, step


def test_frozen_pruned_weights_hold_their_values_in_a_stack(mnist):
    config = TrainConfig(budget="10it", batch_size=60, eval_every="10it", **SGD)
    models = [build_model("lenet300", "mnist", seed=s) for s in (1, 2)]
    masks = [pai.prune(copy.deepcopy(m), "random", 10, seed=0) for m in models]
    frozen = [
        {n: m.get_parameter(n).detach().clone() for n in k}
        for m, k in zip(models, masks, strict=True)
    ]
    solo = [copy.deepcopy(m) for m in models]
    for m, k, f in zip(solo, masks, frozen, strict=True):
        train(m, mnist, config, masks=k, frozen=f, progress=False)
    train_many(models, mnist, config, masks=masks, frozen=frozen, progress=False)
    for own, mine, k, f in zip(solo, models, masks, frozen, strict=True):
        for name, mask in k.items():
            assert torch.equal(mine.get_parameter(name)[~mask], f[name][~mask])
        assert _worst_gap(own, mine)[0] <= RTOL


def test_a_stack_of_one_is_train_bit_for_bit(mnist):
    config = TrainConfig(budget="6it", batch_size=60, eval_every="3it", **SGD)
    own, mine = build_model("lenet300", "mnist", seed=0), build_model("lenet300", "mnist", seed=0)
    solo = train(own, mnist, config.replace(seed=7), progress=False)
    [result] = train_many([mine], mnist, config, seeds=[7], progress=False)
    assert _worst_gap(own, mine)[0] == 0
    assert result.history == [
        dict(r, seconds=result.history[i]["seconds"]) for i, r in enumerate(solo.history)
    ]
    assert result.metrics["stack_size"] == 1


def test_an_out_of_memory_error_halves_the_stack_once(mnist, monkeypatch, caplog):
    config = TrainConfig(budget="4it", batch_size=60, eval_every="4it", **SGD)
    real = stacked._train_stack
    sizes = []

    def fits_two(models, *args):
        sizes.append(len(models))
        if len(models) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(models, *args)

    monkeypatch.setattr(stacked, "_train_stack", fits_two)
    models = [build_model("lenet300", "mnist", seed=s) for s in range(4)]
    solo = [copy.deepcopy(m) for m in models]
    with caplog.at_level(logging.WARNING, logger="pai.training.stacked"):
        results = train_many(models, mnist, config, stack_size=4, progress=False)
    assert sizes == [4, 2, 2]
    assert "out of memory in a stack of 4 runs; retrying in stacks of 2" in caplog.text
    assert [r.metrics["stack_size"] for r in results] == [2, 2, 2, 2]
    for own, mine in zip(solo, models, strict=True):
        train(own, mnist, config, progress=False)
        assert _worst_gap(own, mine)[0] <= RTOL

    def never_fits(models, *args):
        sizes.append(len(models))
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    sizes.clear()
    monkeypatch.setattr(stacked, "_train_stack", never_fits)
    models = [build_model("lenet300", "mnist", seed=s) for s in range(4)]
    with pytest.raises(torch.OutOfMemoryError):
        train_many(models, mnist, config, stack_size=4, progress=False)
    assert sizes == [4, 2]  # halved once, then the error stands


def test_a_stack_that_would_not_fit_is_split(mnist, monkeypatch, caplog):
    """The memory limit (measured on CUDA; here set to 2) bounds the stack size asked for."""
    monkeypatch.setattr(stacked, "_memory_limit", lambda *args: 2)
    config = TrainConfig(budget="2it", batch_size=60, eval_every="2it", **SGD)
    models = [build_model("lenet300", "mnist", seed=s) for s in range(3)]
    seen = []
    with caplog.at_level(logging.WARNING, logger="pai.training.stacked"):
        results = train_many(
            models,
            mnist,
            config,
            stack_size=4,
            progress=False,
            on_trained=lambda k, r: seen.append(k),
        )
    assert "a stack of 4 runs would not fit in memory; stacking 2" in caplog.text
    assert [r.metrics["stack_size"] for r in results] == [2, 2, 1]
    assert seen == [0, 1, 2]


class _LayerNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.flatten, self.norm, self.fc = nn.Flatten(), nn.LayerNorm(784), nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(self.norm(self.flatten(x)))


class _HandFlattenNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(4 * 26 * 26, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).view(x.shape[0], -1))


@pytest.mark.parametrize(
    "net, reason",
    [(_LayerNormNet, "LayerNorm) holds parameters"), (_HandFlattenNet, "stacked inputs")],
    ids=["layernorm", "hand-flatten"],
)
def test_an_unstackable_architecture_trains_one_run_at_a_time(mnist, caplog, net, reason):
    config = TrainConfig(budget="3it", batch_size=60, eval_every="3it", **SGD)
    torch.manual_seed(0)
    models = [net() for _ in range(2)]
    solo = [copy.deepcopy(m) for m in models]
    with caplog.at_level(logging.WARNING, logger="pai.training.stacked"):
        results = train_many(models, mnist, config, progress=False)
    assert "cannot be stacked" in caplog.text and reason in caplog.text
    assert [r.metrics["stack_size"] for r in results] == [1, 1]
    for own, mine in zip(solo, models, strict=True):
        train(own, mnist, config, progress=False)
        assert _worst_gap(own, mine)[0] == 0


@pytest.mark.parametrize("batched", [False, True], ids=["per-run-kernels", "batched-kernels"])
@pytest.mark.parametrize("name", available_models())
def test_every_zoo_model_stacks_its_outputs_and_batchnorm_statistics(name, batched, monkeypatch):
    """Train-mode and eval-mode outputs and the BatchNorm running statistics of a stack of two
    are each model's own (on Fashion-MNIST shapes), with either kind of kernels."""
    monkeypatch.setitem(stacked.BATCHED_KERNELS, "cpu", batched)
    models = [build_model(name, "fashion-mnist", seed=s) for s in (0, 1)]
    assert unstackable_reason(models[0]) is None
    module = stack_modules(models)
    x = torch.randn(2, 2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for mode in (True, False):
            out = module.train(mode)(x.reshape(2, 2, 28, 28))
            for run, model in enumerate(models):
                assert _gap(model.train(mode)(x[:, run]), out[run]) <= 1e-5, (mode, run)
    state = module.state_dict()
    for run, model in enumerate(models):
        assert _worst_gap(model, {k: v[run] for k, v in state.items()})[0] <= 1e-5


@pytest.mark.parametrize("batched", [False, True], ids=["per-run-kernels", "batched-kernels"])
@pytest.mark.parametrize("name", ["lenet300", "resnet20"])
def test_a_stack_under_bf16_autocast_differentiates_as_each_model(name, batched, monkeypatch):
    """The autocast branch of CUDA training, run on the CPU: forward and backward of a stack of
    two under bf16 autocast agree with each model's own to bf16 rounding."""
    monkeypatch.setitem(stacked.BATCHED_KERNELS, "cpu", batched)
    models = [build_model(name, "fashion-mnist", seed=s) for s in (0, 1)]
    module = stack_modules(models)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, 2, 1, 28, 28, generator=generator)
    y = torch.randint(0, 10, (2, 8), generator=generator)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = module(x.reshape(8, 2, 28, 28))
        own = [model(x[:, run]) for run, model in enumerate(models)]
    assert logits.dtype == torch.bfloat16
    losses = torch.nn.functional.cross_entropy(
        logits.float().flatten(0, 1), y.flatten(), reduction="none"
    )
    losses.view(2, 8).mean(1).sum().backward()
    for run, (model, out) in enumerate(zip(models, own, strict=True)):
        assert _gap(out.float(), logits[run].float()) <= 2e-2
        torch.nn.functional.cross_entropy(out.float(), y[run]).backward()
        for key, param in model.named_parameters():
            assert module.get_parameter(key).grad.dtype == torch.float32
            assert _gap(param.grad, module.get_parameter(key).grad[run]) <= 5e-2, key


def test_default_stack_size_and_the_memory_arithmetic(mnist):
    lenet300, conv2 = build_model("lenet300", "mnist"), build_model("conv2", "mnist")
    assert default_stack_size(lenet300, mnist, TrainConfig(), "cpu") == CPU_STACK_SIZE
    assert default_stack_size(conv2, mnist, TrainConfig(), "cpu") == 1
    assert stack_size_for_memory(100 * 2**20, 2**20, cap=64) == 64
    assert stack_size_for_memory(10 * 2**20, 2**20, cap=64) == 8  # 80% of 10 MiB
    assert stack_size_for_memory(2**19, 2**20, cap=64) == 1  # at least one run


def test_bad_groups_are_refused(mnist):
    config = TrainConfig(budget="2it")
    lenet300, lenet5 = build_model("lenet300", "mnist"), build_model("lenet5", "mnist")
    with pytest.raises(PaiError, match="one architecture"):
        train_many([lenet300, lenet5], mnist, config)

    def net(eps: float) -> nn.Module:
        conv, norm = nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2, eps=eps)
        return nn.Sequential(conv, norm, nn.Flatten(), nn.Linear(2 * 28 * 28, 10))

    with pytest.raises(PaiError, match="their settings"):
        train_many([net(1e-5), net(1e-3)], mnist, config)
    with pytest.raises(PaiError, match="2 models, 1 masks"):
        train_many([lenet300, copy.deepcopy(lenet300)], mnist, config, masks=[None])
    with pytest.raises(PaiError, match="stack size"):
        train_many([lenet300], mnist, config, stack_size=0)
