"""The harness trains in stacks: the same runs, identities and numbers as one at a time.

`pai compare` and `pai imp --seeds N` group the runs that may share a loop and train them by
`train_many`; each run keeps its own directory and hash, its metrics record how many runs
shared the loop, and an interruption loses only the runs of the stack in progress. On a CPU
the stacked runs end bit for bit where solo runs end (`tests/test_stacked.py`); evaluation
batches differ in size (a stack splits the same evaluation work among its runs), so test
losses agree to float32 rounding and accuracies exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

import pai.training.stacked
from pai.cli import main

LOSS_RTOL = 1e-5


def _compare(out: Path, data_root: Path, *extra: str) -> list[str]:
    return [
        "compare",
        "--model", "lenet300",
        "--dataset", "mnist",
        "--steps", "20",
        "--batch-size", "100",
        "--train-per-class", "100",
        "--device", "cpu",
        "--data-root", str(data_root),
        "--out", str(out),
        *extra,
    ]  # fmt: skip


def _imp(out: Path, data_root: Path, *extra: str) -> list[str]:
    return [
        "imp",
        "--model", "lenet300",
        "--dataset", "mnist",
        "--levels", "2",
        "--seeds", "3",
        "--steps", "20",
        "--batch-size", "60",
        "--train-per-class", "50",
        "--controls", "reinit,shuffle",
        "--device", "cpu",
        "--data-root", str(data_root),
        "--out", str(out),
        *extra,
    ]  # fmt: skip


def _assert_same_numbers(one: pd.DataFrame, many: pd.DataFrame, exact: list[str]) -> None:
    assert list(one.index) == list(many.index)
    for column in exact:
        assert many[column].equals(one[column]), column  # NaN (no control at level 0) too
    assert many["test_loss"].to_numpy() == pytest.approx(one["test_loss"], rel=LOSS_RTOL)


COMPARE_FLAGS = (
    "--methods", "random,magnitude,imp", "--compressions", "2,4", "--imp-rate", "0.5",
    "--seeds", "2", "--sanity", "shuffle,reinit",
)  # fmt: skip


@pytest.fixture(scope="module")
def comparisons(tmp_path_factory, data_root) -> tuple[Path, Path]:
    """The same comparison one run at a time and in stacks of 8."""
    one, many = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("many")
    assert main(_compare(one, data_root, *COMPARE_FLAGS, "--stack", "1")) == 0
    assert main(_compare(many, data_root, *COMPARE_FLAGS, "--stack", "8")) == 0
    return one, many


def test_stacked_comparison_has_the_runs_and_numbers_of_one_at_a_time(comparisons):
    one, many = (pd.read_csv(out / "runs.csv").set_index("run_dir") for out in comparisons)
    exact = ["test_accuracy", "best_test_accuracy", "untrained_test_accuracy", "kept"]
    _assert_same_numbers(one, many, exact)


def test_final_weights_of_stacked_runs_equal_solo_ones(comparisons):
    for metrics in sorted(comparisons[0].glob("runs/*/metrics.json")):
        run_dir = metrics.parent.name
        one, many = (
            torch.load(out / "runs" / run_dir / "final.pt", weights_only=True)
            for out in comparisons
        )
        for name, tensor in one.items():
            assert torch.equal(tensor, many[name]), (run_dir, name)


def test_metrics_record_how_many_runs_shared_the_loop(comparisons):
    one, many = comparisons
    sizes = {
        path.parent.name: json.loads(path.read_text())["stack_size"]
        for path in many.glob("runs/*/metrics.json")
    }
    assert max(sizes.values()) == 8  # 2 seeds x (dense + 2 methods x 2 x (3 variants)) > 8
    assert {json.loads(p.read_text())["stack_size"] for p in one.glob("runs/*/metrics.json")} == {1}


def test_imp_levels_of_several_seeds_in_lockstep_equal_seed_after_seed(tmp_path, data_root):
    one, many = tmp_path / "one", tmp_path / "many"
    assert main(_imp(one, data_root, "--stack", "1")) == 0
    assert main(_imp(many, data_root, "--stack", "8")) == 0
    roots = sorted(p.name for p in one.glob("imp-*"))
    assert roots == sorted(p.name for p in many.glob("imp-*")) and len(roots) == 3
    exact = ["kept", "test_accuracy", "reinit_test_accuracy", "shuffle_test_accuracy"]
    for root in roots:
        tables = [pd.read_csv(out / root / "levels.csv") for out in (one, many)]
        _assert_same_numbers(*tables, exact)
        level = json.loads((many / root / "level-01" / "metrics.json").read_text())
        # level 2 of three seeds and the two controls of level 1 of each share one loop
        assert level["stack_size"] == 3
        control = json.loads((many / root / "level-01-reinit" / "metrics.json").read_text())
        assert control["stack_size"] == 8  # 3 level-2 tickets + 6 controls, in stacks of 8


def test_an_interrupted_stack_loses_only_its_own_runs(tmp_path, data_root, monkeypatch):
    args = _compare(tmp_path, data_root, "--methods", "random,magnitude", "--compressions",
                    "2,4", "--stack", "2")  # fmt: skip
    real, calls = pai.training.stacked._train_stack, []

    def interrupted_in_the_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(pai.training.stacked, "_train_stack", interrupted_in_the_second)
    assert main(args) == 130
    assert len(pd.read_csv(tmp_path / "runs.csv")) == 2  # the first stack: dense, random x2
    markers = {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/*/COMPLETE")}
    assert len(markers) == 2
    calls.clear()
    assert main(args) == 0
    assert len(calls) == 1  # random x4 and magnitude x2 stacked; magnitude x4 alone
    assert len(pd.read_csv(tmp_path / "runs.csv")) == 5
    assert {p: p.stat().st_mtime_ns for p in markers} == markers


def test_stack_with_a_scheduler_is_one_line_and_exit_2(tmp_path, data_root, capsys):
    args = _compare(tmp_path, data_root, "--methods", "random", "--compressions", "2",
                    "--stack", "4", "--scheduler", "local:1")  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--stack 4" in err and "--scheduler" in err
