"""Preemptible runs: a killed training resumes from its checkpoint and ends bit for bit as an
uninterrupted one; checkpoints are not part of a run's identity and vanish when it completes."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

import pai.training.masked_step
from pai.core.store import FILES, Run
from pai.data.loading import Split, load_dataset, training_subset
from pai.models import build_model
from pai.training.checkpoint import Checkpointing, CheckpointPolicy, state_digest
from pai.training.config import TrainConfig
from pai.training.loop import train

# Kills its own process with SIGKILL right after the second checkpoint is written: a worker
# preempted mid-run, with no chance to clean up.
KILL_AFTER_SECOND_CHECKPOINT = textwrap.dedent(
    """
    import os, signal, sys
    import pai.training.loop as loop
    from pai.cli import main

    real_save, saved = loop.save_checkpoint, []

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        saved.append(1)
        if len(saved) == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    loop.save_checkpoint = save_then_die
    sys.exit(main(sys.argv[1:]))
    """
)


def _train_args(out: Path, data_root: Path) -> list[str]:
    # 1,000 examples at batch 100: 10 steps an epoch; checkpoints at steps 13 and 26, mid-epoch
    return [
        "train", "--model", "lenet300", "--dataset", "mnist", "--steps", "45",
        "--batch-size", "100", "--train-per-class", "100", "--augment", "--weight-decay", "5e-4",
        "--checkpoint-every", "13it", "--device", "cpu", "--data-root", str(data_root),
        "--out", str(out),
    ]  # fmt: skip


def _pai(args: list[str], script: str | None = None) -> subprocess.CompletedProcess:
    command = (
        [sys.executable, "-c", script, *args] if script else [sys.executable, "-m", "pai", *args]
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same thread count in every process
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_a_run_killed_after_its_second_checkpoint_resumes_and_ends_bit_for_bit(tmp_path, data_root):
    killed = _pai(_train_args(tmp_path / "resumed", data_root), KILL_AFTER_SECOND_CHECKPOINT)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (run_dir,) = (tmp_path / "resumed").glob("train-*")
    assert not (run_dir / FILES.marker).exists() and (run_dir / FILES.checkpoint).is_file()

    resumed = _pai(_train_args(tmp_path / "resumed", data_root))
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from the checkpoint at step 26" in resumed.stdout
    whole = _pai(_train_args(tmp_path / "whole", data_root))
    assert whole.returncode == 0, whole.stderr
    (whole_dir,) = (tmp_path / "whole").glob("train-*")
    assert whole_dir.name == run_dir.name  # checkpointing is not part of the run's identity

    metrics = json.loads((run_dir / FILES.metrics).read_text())
    assert metrics["resumed_from_step"] == 26 and metrics["attempt_steps"] == 45 - 26
    assert metrics["steps"] == 45  # the run's steps, over both attempts
    history, whole_history = (pd.read_csv(d / FILES.history) for d in (run_dir, whole_dir))
    assert history.step.tolist() == [10, 20, 30, 40, 45]
    columns = ["step", "train_loss", "test_accuracy", "test_loss", "lr"]
    pd.testing.assert_frame_equal(history[columns], whole_history[columns])
    final, expected = (torch.load(d / FILES.final, weights_only=True) for d in (run_dir, whole_dir))
    assert final.keys() == expected.keys()
    for name in final:
        assert torch.equal(final[name], expected[name]), name
    assert not (run_dir / FILES.checkpoint).exists() and (run_dir / FILES.marker).is_file()


@pytest.fixture(scope="module")
def mnist(data_root):
    """1,000 training images (10 steps an epoch at batch 100) and 500 test images of MNIST."""
    data = training_subset(load_dataset("mnist", root=data_root, device="cpu"), 100)
    test = Split(data.test.x[:500], data.test.y[:500], data.test.num_classes, data.test.pad_value)
    return dataclasses.replace(data, test=test)


def _interrupted(model, data, config, checkpoint, after_steps, **options):
    """Train until `after_steps` optimizer steps are done, then raise as Ctrl-C would."""
    real_step, steps = pai.training.masked_step.MaskedStep.step, []

    def step_then_stop(self):
        if len(steps) == after_steps:
            raise KeyboardInterrupt
        steps.append(1)
        real_step(self)

    pai.training.masked_step.MaskedStep.step = step_then_stop
    try:
        with pytest.raises(KeyboardInterrupt):
            train(model, data, config, checkpoint=checkpoint, **options)
    finally:
        pai.training.masked_step.MaskedStep.step = real_step


@pytest.mark.parametrize(
    "config",
    [
        TrainConfig(budget="24it", batch_size=100, eval_every="5it", optimizer="adam", lr=1e-3,
                    lr_schedule="step", milestones=("8it",), warmup="3it"),
        TrainConfig(budget="24it", batch_size=100, eval_every="5it", nesterov=True,
                    weight_decay=1e-4, augment=True),
    ],
    ids=["adam-step-warmup", "sgd-nesterov-augmented"],
)  # fmt: skip
def test_resumed_training_equals_the_uninterrupted_one(mnist, tmp_path, config):
    """Optimizer moments, the lr schedule, the data order (an epoch is 10 steps here, so the
    checkpoint at 14 is mid-epoch), the history and the snapshots all carry over."""
    whole = build_model("lenet300", "mnist", seed=0)
    expected = train(whole, mnist, config, snapshot_at=("2it", "20it"))
    checkpoint = Checkpointing(tmp_path / "checkpoint.pt", "7it")
    _interrupted(
        build_model("lenet300", "mnist", seed=0), mnist, config, checkpoint, 17,
        snapshot_at=("2it", "20it"),
    )  # fmt: skip
    model = build_model("lenet300", "mnist", seed=0)
    result = train(model, mnist, config, checkpoint=checkpoint, snapshot_at=("2it", "20it"))
    assert result.metrics["resumed_from_step"] == 14 and result.metrics["attempt_steps"] == 10
    for name, value in whole.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    timing = ("seconds",)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]  # noqa: E731
    assert strip(result.history) == strip(expected.history)
    for step, state in expected.snapshots.items():
        assert all(torch.equal(state[k], result.snapshots[step][k]) for k in state), step
    same = {k for k in expected.metrics if not k.endswith("seconds")} - {
        "resumed_from_step", "attempt_steps"
    }  # fmt: skip
    assert {k: result.metrics[k] for k in same} == {k: expected.metrics[k] for k in same}


def test_a_checkpoint_of_another_training_is_ignored(mnist, tmp_path):
    config = TrainConfig(budget="12it", batch_size=100, eval_every="6it")
    checkpoint = Checkpointing(tmp_path / "checkpoint.pt", "5it")
    other = config.replace(lr=0.05)
    _interrupted(build_model("lenet300", "mnist", seed=0), mnist, other, checkpoint, 7)
    assert checkpoint.path.is_file()
    model = build_model("lenet300", "mnist", seed=0)
    result = train(model, mnist, config, checkpoint=checkpoint)
    assert result.metrics["resumed_from_step"] == 0 and result.metrics["attempt_steps"] == 12
    whole = build_model("lenet300", "mnist", seed=0)
    train(whole, mnist, config)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in whole.state_dict().items())
    # another start (a different initialization) is another training too
    checkpoint = Checkpointing(tmp_path / "other.pt", "5it")
    _interrupted(build_model("lenet300", "mnist", seed=0), mnist, config, checkpoint, 7)
    result = train(build_model("lenet300", "mnist", seed=1), mnist, config, checkpoint=checkpoint)
    assert result.metrics["resumed_from_step"] == 0


def test_run_start_keeps_only_the_checkpoint_of_an_unfinished_run(tmp_path):
    run = Run(tmp_path, "train", {"a": 1})
    run.start()
    run.save_tensors(FILES.checkpoint, {"x": torch.zeros(2)})
    run.save_tensors(FILES.start, {"x": torch.zeros(2)})
    run.start()
    assert {p.name for p in run.path.iterdir()} == {FILES.config, FILES.checkpoint}
    run.finish()
    run.start()  # a finished run started again starts from nothing
    assert {p.name for p in run.path.iterdir()} == {FILES.config}


def test_policy_and_digest():
    assert CheckpointPolicy("500").every == "500it" and CheckpointPolicy().every == "1000it"
    with pytest.raises(ValueError, match="at least one step"):
        CheckpointPolicy("0it")
    a = {"w": torch.arange(4.0)}
    assert state_digest(a) == state_digest({"w": torch.arange(4.0)})
    assert state_digest(a) != state_digest({"w": torch.arange(4.0) + 1e-7})
    assert state_digest(a) != state_digest({"v": torch.arange(4.0)})


def test_keep_checkpoint_leaves_it_in_the_finished_run(tmp_path, data_root):
    from pai.cli import main

    args = _train_args(tmp_path, data_root)
    args[args.index("--steps") + 1] = "14"
    assert main([*args, "--keep-checkpoint"]) == 0
    (run_dir,) = tmp_path.glob("train-*")
    assert (run_dir / FILES.marker).is_file() and (run_dir / FILES.checkpoint).is_file()


def test_an_imp_level_killed_mid_training_resumes_from_its_checkpoint(mnist, tmp_path):
    from pai.search.imp import ImpConfig, imp_path, run_imp

    train = TrainConfig(budget="12it", batch_size=100, eval_every="6it")
    config = ImpConfig("lenet300", "mnist", train, levels=2, rate=0.5)
    policy = CheckpointPolicy("5it")
    run_imp(config, tmp_path / "whole", data=mnist, progress=False, checkpoint=None)
    real_step, steps = pai.training.masked_step.MaskedStep.step, []

    def stop_in_level_one(self):  # level 0 trains 12 steps, then level 1's 8th step stops
        if len(steps) == 12 + 7:
            raise KeyboardInterrupt
        steps.append(1)
        real_step(self)

    pai.training.masked_step.MaskedStep.step = stop_in_level_one
    try:
        with pytest.raises(KeyboardInterrupt):
            run_imp(config, tmp_path / "resumed", data=mnist, progress=False, checkpoint=policy)
    finally:
        pai.training.masked_step.MaskedStep.step = real_step
    root = imp_path(config, tmp_path / "resumed")
    assert (root / "level-01" / FILES.checkpoint).is_file()
    run_imp(config, tmp_path / "resumed", data=mnist, progress=False, checkpoint=policy)
    metrics = json.loads((root / "level-01" / FILES.metrics).read_text())
    assert metrics["resumed_from_step"] == 5 and metrics["attempt_steps"] == 7
    whole = imp_path(config, tmp_path / "whole")
    for level in ("level-00", "level-01", "level-02"):
        a, b = (torch.load(r / level / FILES.final, weights_only=True) for r in (root, whole))
        assert all(torch.equal(a[k], b[k]) for k in a), level
        assert not (root / level / FILES.checkpoint).exists()


def test_a_comparison_run_killed_mid_training_resumes_from_its_checkpoint(tmp_path, data_root):
    from pai.cli import main

    args = [
        "compare", "--model", "lenet300", "--dataset", "mnist", "--methods", "magnitude",
        "--compressions", "4", "--steps", "12", "--batch-size", "100", "--train-per-class",
        "100", "--checkpoint-every", "5it", "--device", "cpu", "--data-root", str(data_root),
        "--stack", "1",  # runs trained in a stack do not checkpoint
    ]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    real_step, steps = pai.training.masked_step.MaskedStep.step, []

    def stop_in_the_second_run(self):  # the dense run's 12 steps, then 8 of magnitude's
        if len(steps) == 12 + 8:
            raise KeyboardInterrupt
        steps.append(1)
        real_step(self)

    pai.training.masked_step.MaskedStep.step = stop_in_the_second_run
    try:
        assert main([*args, "--out", str(tmp_path / "resumed")]) == 130
    finally:
        pai.training.masked_step.MaskedStep.step = real_step
    assert main([*args, "--out", str(tmp_path / "resumed")]) == 0
    (run,) = (tmp_path / "resumed" / "runs").glob("magnitude-original-*")
    metrics = json.loads((run / FILES.metrics).read_text())
    assert metrics["resumed_from_step"] == 5 and metrics["attempt_steps"] == 7
    expected = tmp_path / "whole" / "runs" / run.name
    a, b = (torch.load(r / FILES.final, weights_only=True) for r in (run, expected))
    assert all(torch.equal(a[k], b[k]) for k in a)
    columns = ["method", "compression", "test_accuracy", "test_loss", "train_steps"]
    tables = [
        pd.read_csv(out / "runs.csv")[columns] for out in (tmp_path / "resumed", tmp_path / "whole")
    ]
    pd.testing.assert_frame_equal(*tables)
