"""The comparison harness end to end on real MNIST: rows, true compressions, resuming, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import scipy.stats
import torch

import pai.training.record
import pai.training.stacked
from pai.cli import main
from pai.core.errors import PaiError
from pai.data.loading import load_dataset
from pai.experiments.compare import CompareConfig, find_ticket, plan_runs, run_comparison
from pai.models import build_model
from pai.pruning.masks import Masks, kept_count
from pai.pruning.registry import unregister_scorer
from pai.report.schema import RUN_COLUMNS
from pai.report.tables import summarize
from pai.training.config import TrainConfig
from pai.training.loop import train

LENET300_WEIGHTS = 784 * 300 + 300 * 100 + 100 * 10  # 266,200 prunable weights


def _compare_args(out: Path, data_root: Path, *extra: str) -> list[str]:
    return [
        "compare",
        "--model", "lenet300",
        "--dataset", "mnist",
        "--steps", "20",
        "--batch-size", "100",
        "--device", "cpu",
        "--data-root", str(data_root),
        "--out", str(out),
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def comparison(tmp_path_factory, data_root) -> Path:
    """random, magnitude and IMP (rate 0.5: levels at 2 and 4) at 2 and 4, one seed, shuffle."""
    out = tmp_path_factory.mktemp("compare")
    args = _compare_args(
        out,
        data_root,
        "--methods", "random,magnitude,imp",
        "--compressions", "2,4",
        "--imp-rate", "0.5",
        "--sanity", "shuffle",
    )  # fmt: skip
    assert main(args) == 0
    return out


def test_runs_csv_has_the_required_columns_first_and_one_row_per_run(comparison):
    runs = pd.read_csv(comparison / "runs.csv")
    assert tuple(runs.columns[: len(RUN_COLUMNS)]) == RUN_COLUMNS
    # dense + 3 methods x 2 compressions x (original, shuffle)
    assert len(runs) == 1 + 3 * 2 * 2
    assert not runs.duplicated(["method", "variant", "requested_compression", "seed"]).any()
    assert set(runs["variant"]) == {"original", "shuffle"}
    assert runs["test_accuracy"].between(0, 1).all()
    assert (runs["best_test_accuracy"] >= runs["test_accuracy"]).all()
    assert runs["initial_train_loss"].between(0.5, 20).all()  # measured for every run
    dense = runs[runs["method"] == "dense"].iloc[0]
    assert dense["compression"] == 1 and dense["test_accuracy"] > 0.6


def test_the_output_folder_says_how_it_was_produced(comparison):
    provenance = (comparison / "PROVENANCE.md").read_text()
    assert "- command: `pai compare --model lenet300 --dataset mnist --steps 20" in provenance
    for field in ("- commit: ", "- machine: ", "- date: ", "- wall time: "):
        assert field in provenance
    assert "runs.csv holds 13 complete runs" in provenance


def test_compressions_are_the_true_ones(comparison):
    runs = pd.read_csv(comparison / "runs.csv")
    pruned = runs[runs["method"] != "dense"]
    for row in pruned.itertuples():
        kept = kept_count(LENET300_WEIGHTS, row.requested_compression)
        assert row.kept == kept and row.total == LENET300_WEIGHTS
        assert row.compression == pytest.approx(LENET300_WEIGHTS / kept, rel=1e-12)
        masks = Masks.load(comparison / "runs" / row.run_dir / "masks.pt")
        assert masks.kept == row.kept  # the stored mask is the one recorded


def test_search_cost_of_imp_is_the_training_before_its_level(comparison):
    runs = pd.read_csv(comparison / "runs.csv")
    imp = runs[(runs["method"] == "imp") & (runs["variant"] == "original")]
    imp = imp.set_index("requested_compression")
    assert imp.loc[2.0, "search_steps"] == 20  # level 0 trained before level 1 (2x)
    assert imp.loc[4.0, "search_steps"] == 40  # levels 0 and 1 before level 2 (4x)
    assert imp.loc[4.0, "search_epochs"] == pytest.approx(40 / 600)  # 600 steps per epoch
    assert imp["reused_training"].all()
    pai_rows = runs[runs["method"].isin(["random", "magnitude"])]
    assert (pai_rows["search_epochs"] == 0).all() and (pai_rows["scoring_passes"] == 1).all()


def test_reused_imp_training_equals_training_the_ticket_again(comparison, data_root):
    """IMP's level result stands in for the harness's training only because it is identical."""
    runs = pd.read_csv(comparison / "runs.csv")
    row = runs[(runs["method"] == "imp") & (runs["variant"] == "original")].iloc[-1]
    data = load_dataset("mnist", root=data_root, device="cpu")
    config = TrainConfig(budget="20it", batch_size=100, seed=0)  # the CLI's, with its defaults
    ticket = find_ticket(
        "imp", "lenet300", "mnist", 4, data=data, train=config, options={"rate": 0.5},
        compressions=(2, 4), store=comparison / "runs",
    )  # fmt: skip
    model = build_model("lenet300", "mnist", seed=0)
    model.load_state_dict(ticket.state)
    result = train(model, data, config, masks=ticket.masks, progress=False)
    assert result.metrics["test_accuracy"] == row["test_accuracy"]


def test_shuffle_keeps_layer_densities_and_moves_the_weights(comparison):
    runs = pd.read_csv(comparison / "runs.csv")
    for method in ("magnitude", "imp"):
        for compression in (2.0, 4.0):
            same = runs[(runs["method"] == method) & (runs["requested_compression"] == compression)]
            by_variant = dict(zip(same["variant"], same["run_dir"], strict=True))
            original = Masks.load(comparison / "runs" / by_variant["original"] / "masks.pt")
            shuffled = Masks.load(comparison / "runs" / by_variant["shuffle"] / "masks.pt")
            assert shuffled.layer_kept() == original.layer_kept()
            assert shuffled != original


def test_summary_and_figure_are_written(comparison):
    summary = pd.read_csv(comparison / "summary.csv")
    assert len(summary) == 1 + 3 * 2 * 2
    assert (summary["n"] == 1).all()
    text = (comparison / "summary.md").read_text()
    assert text.startswith("| method") and "imp" in text
    png = (comparison / "accuracy_vs_compression.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_rerun_trains_nothing(comparison, data_root, monkeypatch):
    before = (comparison / "runs.csv").read_text()
    markers = {p: p.stat().st_mtime_ns for p in comparison.glob("runs/*/COMPLETE")}
    assert len(markers) == 13

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(pai.training.record, "train", no_training)
    monkeypatch.setattr(pai.training.stacked, "train_many", no_training)
    args = _compare_args(
        comparison, data_root,
        "--methods", "random,magnitude,imp", "--compressions", "2,4",
        "--imp-rate", "0.5", "--sanity", "shuffle",
    )  # fmt: skip
    assert main(args) == 0
    assert (comparison / "runs.csv").read_text() == before
    assert {p: p.stat().st_mtime_ns for p in comparison.glob("runs/*/COMPLETE")} == markers


def test_interrupted_comparison_keeps_finished_runs_and_completes(tmp_path, data_root, monkeypatch):
    args = _compare_args(
        tmp_path, data_root, "--methods", "random,magnitude", "--compressions", "2,4", "--stack", "1"
    )
    real_train = pai.training.record.train
    calls = []

    def interrupted_on_the_fourth(*a, **k):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_train(*a, **k)

    monkeypatch.setattr(pai.training.record, "train", interrupted_on_the_fourth)
    assert main(args) == 130
    finished = pd.read_csv(tmp_path / "runs.csv")
    assert len(finished) == 3  # dense, random x2, random x4
    assert len(list(tmp_path.glob("runs/*/COMPLETE"))) == 3
    runs = [p for p in tmp_path.glob("runs/*") if not p.name.startswith(".")]  # no lock files
    assert len(runs) == 4  # the interrupted one, unfinished
    markers = {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/*/COMPLETE")}

    calls.clear()

    def counted(*a, **k):
        calls.append(1)
        return real_train(*a, **k)

    monkeypatch.setattr(pai.training.record, "train", counted)
    assert main(args) == 0
    assert len(calls) == 2  # only magnitude x2 and x4 trained
    assert len(pd.read_csv(tmp_path / "runs.csv")) == 5
    assert {p: p.stat().st_mtime_ns for p in markers} == markers


def test_unknown_method_is_one_line_and_exit_2(tmp_path, data_root, capsys):
    args = _compare_args(tmp_path, data_root, "--methods", "random,nope", "--compressions", "2")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "'nope'" in err and "imp" in err and "synflow" in err and "earlybird" in err
    assert not (tmp_path / "runs.csv").exists()


def test_a_collapsed_network_is_trained_recorded_and_marked(tmp_path, data_root):
    """Random pruning to 3 weights of 266,200 empties at least one of the three layers."""
    args = _compare_args(tmp_path, data_root, "--methods", "random", "--compressions", "90000")
    args[args.index("--steps") + 1] = "2"
    assert main(args) == 0
    runs = pd.read_csv(tmp_path / "runs.csv")
    row = runs[runs["method"] == "random"].iloc[0]
    assert row["kept"] == 3
    assert bool(row["collapsed"]) and row["effective_compression"] == float("inf")
    assert row["test_accuracy"] < 0.2  # a constant output: one class right, about chance
    dense = runs[runs["method"] == "dense"].iloc[0]
    assert not bool(dense["collapsed"])


def test_plan_skips_invert_for_methods_that_train(caplog):
    config = CompareConfig(
        "lenet300", "mnist", ("magnitude", "earlybird", "imp"), (2.0, 8.0),
        TrainConfig(budget="1ep"), seeds=(0, 1), sanity=("invert", "reinit"),
    )  # fmt: skip
    specs = plan_runs(config)
    variants = {(s.method, s.variant) for s in specs}
    assert ("magnitude", "invert") in variants
    assert ("earlybird", "invert") not in variants and ("imp", "invert") not in variants
    assert ("imp", "reinit") in variants
    # per seed: dense + magnitude 2 x 3 variants + (earlybird, imp) 2 x 2 variants each
    assert len(specs) == 2 * (1 + 6 + 4 + 4)
    assert "'invert' skipped for earlybird" in caplog.text
    seeds_of = {s.seed: s.train.seed for s in specs}
    assert seeds_of == {0: 0, 1: 1}  # each seed trains with its own data order


def test_summary_statistics_over_seeds():
    runs = pd.DataFrame(
        {
            "method": ["snip"] * 3,
            "variant": ["original"] * 3,
            "requested_compression": [10.0] * 3,
            "compression": [10.0] * 3,
            "effective_compression": [10.0, 11.0, float("inf")],
            "test_accuracy": [0.5, 0.7, 0.9],
            "best_test_accuracy": [0.6, 0.8, 0.9],
            "collapsed": [False, False, True],
            "search_epochs": [0.0, 0.0, 3.0],
            "seed": [0, 1, 2],
        }
    )
    row = summarize(runs).iloc[0]
    assert row["n"] == 3
    assert row["test_accuracy_mean"] == pytest.approx(0.7)
    assert row["test_accuracy_sd"] == pytest.approx(0.2)  # sample sd (n - 1)
    assert row["collapsed_fraction"] == pytest.approx(1 / 3)
    assert row["search_epochs_mean"] == pytest.approx(1.0)
    assert row["effective_compression_median"] == pytest.approx(11.0)
    # t(0.975, 2) = 4.302653: half-width 4.302653 * 0.2 / sqrt(3)
    assert row["test_accuracy_ci95"] == pytest.approx(4.302653 * 0.2 / 3**0.5, rel=1e-6)
    assert math.isnan(row["delta_vs_original_mean"])  # an original has no delta


def test_sanity_checks_are_paired_with_their_original_seed_by_seed():
    original = [0.90, 0.80, 0.70]
    shuffled = [0.85, 0.70, 0.65]  # seeds 2, 1, 0
    runs = pd.DataFrame(
        {
            "method": ["snip"] * 7,
            "variant": ["original"] * 3 + ["shuffle"] * 3 + ["reinit"],
            "requested_compression": [10.0] * 7,
            "compression": [10.0] * 7,
            "effective_compression": [10.0] * 7,
            "test_accuracy": [*original, *shuffled, 0.5],
            "best_test_accuracy": [*original, *shuffled, 0.5],
            "collapsed": [False] * 7,
            "search_epochs": [0.0] * 7,
            "seed": [0, 1, 2, 2, 1, 0, 1],  # out of order: pairing is by seed, not by row
        }
    )
    summary = summarize(runs).set_index("variant")
    shuffle = summary.loc["shuffle"]
    deltas = [0.65 - 0.90, 0.70 - 0.80, 0.85 - 0.70]  # seeds 0, 1, 2
    mean = sum(deltas) / 3
    sd = (sum((d - mean) ** 2 for d in deltas) / 2) ** 0.5
    assert shuffle["delta_vs_original_mean"] == pytest.approx(mean)
    assert shuffle["delta_vs_original_ci95"] == pytest.approx(4.302653 * sd / 3**0.5, rel=1e-6)
    t = mean / (sd / 3**0.5)
    assert shuffle["delta_vs_original_p"] == pytest.approx(
        2 * scipy.stats.t.sf(abs(t), 2), rel=1e-9
    )
    reinit = summary.loc["reinit"]  # one pair: a delta, no interval, no test
    assert reinit["delta_vs_original_mean"] == pytest.approx(0.5 - 0.80)
    assert math.isnan(reinit["delta_vs_original_ci95"]) and math.isnan(
        reinit["delta_vs_original_p"]
    )


def test_row_json_matches_runs_csv(comparison):
    runs = pd.read_csv(comparison / "runs.csv")
    first = runs.iloc[1]
    stored = json.loads((comparison / "runs" / first["run_dir"] / "row.json").read_text())
    assert stored["test_accuracy"] == first["test_accuracy"]
    assert stored["kept"] == first["kept"] and stored["method"] == first["method"]


def test_parallel_seeds_train_the_same_runs_as_one_process(tmp_path, data_root):
    flags = ("--methods", "random,magnitude", "--compressions", "4", "--seeds", "2")
    sequential, parallel = tmp_path / "one", tmp_path / "two"
    assert main(_compare_args(sequential, data_root, *flags)) == 0
    assert main(_compare_args(parallel, data_root, *flags, "--jobs", "2")) == 0
    one = pd.read_csv(sequential / "runs.csv").set_index("run_dir")
    two = pd.read_csv(parallel / "runs.csv").set_index("run_dir")
    assert sorted(one.index) == sorted(two.index) and len(one) == 2 * 3  # same run identities
    for run_dir in one.index:
        masks = [Masks.load(out / "runs" / run_dir / "masks.pt") for out in (sequential, parallel)]
        assert masks[0] == masks[1], run_dir
    # the thread count may differ between the two, so the last digits may too
    accuracy = two.loc[one.index, "test_accuracy"]
    assert accuracy.to_numpy() == pytest.approx(one["test_accuracy"].to_numpy(), abs=0.02)
    assert (parallel / "summary.md").is_file()


def test_in_process_scorers_cannot_train_in_worker_processes(tmp_path):
    @pai.register_scorer
    class Local(pai.Scorer):
        name = "local-only"
        needs_data = False
        default_rounds = 1
        description = "a scorer known to this process only"

        def score(self, model, masks, context):
            return {n: torch.ones_like(p) for n, p in self.weights(model, masks).items()}

    try:
        config = CompareConfig("lenet300", "mnist", ("local-only",), (2.0,), TrainConfig())
        with pytest.raises(PaiError, match="'local-only' is registered in this process only"):
            run_comparison(config, tmp_path, jobs=2)
    finally:
        unregister_scorer("local-only")
