"""Masked training: pruned weights stay exactly zero, runs are reproducible and stored whole."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from pai.cli import main
from pai.data.loading import load_dataset
from pai.core.errors import PaiError
from pai.pruning.masks import Masks, keep_topk, prunable_parameters
from pai.models import build_model
from pai.training.config import TrainConfig
from pai.training.loop import train


@pytest.fixture(scope="module")
def mnist(data_root):
    return load_dataset("mnist", root=data_root, device="cpu")


def random_masks(model, compression: float, seed: int = 0) -> Masks:
    g = torch.Generator().manual_seed(seed)
    scores = {n: torch.rand(p.shape, generator=g) for n, p in prunable_parameters(model).items()}
    return keep_topk(scores, compression)


@pytest.mark.parametrize(
    "config",
    [
        TrainConfig(budget="60it", momentum=0.9, weight_decay=5e-4, nesterov=True),
        TrainConfig(budget="60it", optimizer="adam", lr=1e-3, weight_decay=1e-4),
    ],
    ids=["sgd-nesterov-wd", "adam-wd"],
)
def test_pruned_weights_are_exactly_zero_after_training(mnist, config):
    model = build_model("lenet300", "mnist", seed=0)
    masks = random_masks(model, 10)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train(model, mnist, config.replace(eval_every="30it"), masks=masks)
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert torch.all(params[name][~mask] == 0), name
        assert not torch.equal(params[name][mask], before[name][mask]), "kept weights must train"


def test_snapshots_and_early_stop(mnist):
    model = build_model("lenet300", "mnist", seed=0)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    stops = []

    def stop_after_first(epoch, _model):
        stops.append(epoch)
        return True

    config = TrainConfig(budget="3ep", batch_size=6000, eval_every="5it")
    result = train(model, mnist, config, snapshot_at=("0it", "3it"), on_epoch_end=stop_after_first)
    assert result.stopped_early and stops == [1]
    assert result.metrics["steps"] == 10 and result.metrics["epochs"] == 1
    assert all(torch.equal(result.snapshots["0it"][k], initial[k]) for k in initial)
    assert not torch.equal(result.snapshots["3it"]["fc.weight"], initial["fc.weight"])
    assert [row["step"] for row in result.history] == [5, 10]


def run_cli(tmp_path, data_root, *extra):
    argv = ["train", "--model", "lenet300", "--dataset", "mnist", "--steps", "40"]
    argv += ["--weight-decay", "5e-4", "--data-root", str(data_root), "--out", str(tmp_path)]
    assert main([*argv, *extra]) == 0
    return sorted(tmp_path.glob("train-*"))


def test_cli_run_directory_holds_every_file_and_masks_stay_zero(tmp_path, data_root, capsys):
    model = build_model("lenet300", "mnist", seed=0)
    random_masks(model, 10).save(tmp_path / "masks.pt")
    out = tmp_path / "runs"
    (run_dir,) = run_cli(out, data_root, "--masks", str(tmp_path / "masks.pt"))
    names = {p.name for p in run_dir.iterdir()}
    assert names == {
        "config.json",
        "metrics.json",
        "history.csv",
        "masks.pt",
        "start.pt",
        "final.pt",
        "COMPLETE",
    }
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= metrics["test_accuracy"] <= 1 and metrics["steps"] == 40
    assert metrics["density"] == pytest.approx(0.1, abs=1e-5)
    final = torch.load(run_dir / "final.pt", weights_only=True)
    masks = Masks.load(run_dir / "masks.pt")
    for name, mask in masks.items():
        assert torch.all(final[name][~mask] == 0)
    assert len(pd.read_csv(run_dir / "history.csv")) == 1
    assert "test accuracy" in capsys.readouterr().out
    # A finished run is not trained again.
    run_cli(out, data_root, "--masks", str(tmp_path / "masks.pt"))
    assert "already complete" in capsys.readouterr().out


def test_same_seed_same_metrics_other_seed_different(tmp_path, data_root):
    first = run_cli(tmp_path / "a", data_root, "--seed", "3")[0]
    second = run_cli(tmp_path / "b", data_root, "--seed", "3")[0]
    other = run_cli(tmp_path / "c", data_root, "--seed", "4")[0]

    def metrics(run_dir):
        values = json.loads((run_dir / "metrics.json").read_text())
        return {k: v for k, v in values.items() if k not in ("wall_seconds", "eval_seconds")}

    assert metrics(first) == metrics(second)
    assert metrics(first) != metrics(other)
    a = torch.load(first / "final.pt", weights_only=True)
    b = torch.load(second / "final.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "nope"], "unknown model 'nope'"),
        (["--optimizer", "rmsprop"], "invalid choice: 'rmsprop'"),
        (["--lr", "-1"], "lr must be a finite number >= 0, got -1.0"),
        (["--warmup", "5x"], "bad step '5x'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, data_root, capsys, argv, message):
    base = {"--model": "lenet300", "--dataset": "mnist", "--steps": "1", "--out": str(tmp_path)}
    base.update(dict(zip(argv[::2], argv[1::2], strict=True)))
    full = ["train", "--data-root", str(data_root)] + [x for kv in base.items() for x in kv]
    try:
        code = main(full)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("augment", [False, True], ids=["plain", "augmented"])
def test_resuming_at_step_k_continues_the_schedule_and_data_order_bit_for_bit(mnist, augment):
    """Without optimizer state (plain SGD) a run resumed at step k from the step-k weights is
    the uninterrupted run: same learning rates at the same steps, same (augmented) batches."""
    config = TrainConfig(
        budget="25it", batch_size=6000, momentum=0.0, eval_every="5it", augment=augment
    )
    whole = build_model("lenet300", "mnist", seed=0)
    full = train(whole, mnist, config, snapshot_at=("7it",))
    resumed = build_model("lenet300", "mnist", seed=0)
    resumed.load_state_dict(full.snapshots["7it"])
    part = train(resumed, mnist, config, start_at="7it", snapshot_at=("7it",))
    for name, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    assert [row["step"] for row in part.history] == [10, 15, 20, 25]
    assert part.history[-1]["lr"] == full.history[-1]["lr"]
    assert part.metrics["steps"] == 18 and part.metrics["start_step"] == 7
    assert part.metrics["test_accuracy"] == full.metrics["test_accuracy"]
    assert all(torch.equal(v, full.snapshots["7it"][k]) for k, v in part.snapshots["7it"].items())


def test_a_start_step_that_leaves_nothing_to_train_is_an_error(mnist):
    model = build_model("lenet300", "mnist", seed=0)
    with pytest.raises(PaiError, match="start step 10it leaves nothing to train"):
        train(model, mnist, TrainConfig(budget="10it", batch_size=6000), start_at="10it")
    with pytest.raises(PaiError, match="snapshot step 2it comes before the start step 5it"):
        train(model, mnist, TrainConfig(budget="10it"), start_at="5it", snapshot_at=("2it",))


def test_initial_train_loss_is_the_first_batch_before_any_update(mnist):
    config = TrainConfig(budget="3it", batch_size=100, seed=5)
    x, y = next(mnist.train.batches(100, torch.Generator().manual_seed(5)))
    expected = torch.nn.functional.cross_entropy(build_model("lenet300", "mnist", seed=0)(x), y)
    result = train(build_model("lenet300", "mnist", seed=0), mnist, config)
    assert result.metrics["initial_train_loss"] == pytest.approx(expected.item(), rel=1e-6)
