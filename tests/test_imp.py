"""IMP: exact schedules, real rewinding, monotone masks, resumable levels, controls, resets."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import pandas as pd
import pytest
import torch

import pai.training.record
from pai.cli import main
from pai.core.errors import PaiError
from pai.core.store import config_hash
from pai.data.loading import Split, load_dataset
from pai.experiments.imp_sweep import run_imp_seeds
from pai.pruning.levels import imp_schedule, pruning_plan
from pai.pruning.masks import Masks, kept_count
from pai.search.imp import ImpConfig, imp_loop, imp_path, run_imp
from pai.training.config import TrainConfig

LENET300 = {"features.1.weight": 235200, "features.3.weight": 30000, "fc.weight": 1000}
TINY_TRAIN = TrainConfig(budget="6it", batch_size=100, lr=0.05, eval_every="3it")


def round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


@pytest.fixture(scope="module")
def mnist_small(data_root):
    """600 training and 500 test images of real MNIST: 6 steps an epoch at batch 100."""
    data = load_dataset("mnist", root=data_root, device="cpu")

    def head(split: Split, n: int) -> Split:
        return Split(split.x[:n], split.y[:n], split.num_classes, split.pad_value)

    return dataclasses.replace(data, train=head(data.train, 600), test=head(data.test, 500))


def load(path):
    return torch.load(path, weights_only=True)


def masked(state, masks):
    return {k: v * masks[k] if k in masks else v for k, v in state.items()}


def assert_states_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# --- schedules ------------------------------------------------------------------------------


def test_schedule_keeps_round_half_up_of_n_times_0_8_to_the_level():
    assert imp_schedule(10, 3) == [8, 6, 5]  # 8, 6.4, 5.12
    assert imp_schedule(10, 3, rate=0.5) == [5, 3, 1]  # 5, 2.5 rounds up to 3, 1.25
    n = sum(LENET300.values())
    assert imp_schedule(n, 20) == [round_half_up(n * 0.8**level) for level in range(1, 21)]


def test_schedule_reaches_every_target_exactly_and_stops_at_the_largest():
    # geometric 800, 640, 512, 410 (409.6), 328 (327.68); targets 2 -> 500, 10 -> 100
    assert imp_schedule(1000, 5, targets=(10, 2)) == [800, 640, 512, 500, 410, 328, 100]
    # levels beyond the largest target (4 -> 250) are dropped
    assert imp_schedule(1000, 20, targets=(4,)) == [800, 640, 512, 410, 328, 262, 250]
    # a target that repeats a geometric count is one level
    assert imp_schedule(1000, 2, targets=(1.25,)) == [800]
    assert imp_schedule(1001, 0, targets=(1000,)) == [kept_count(1001, 1000)]


def test_layerwise_plan_with_half_rate_output_layer():
    plan = pruning_plan(LENET300, levels=15, scope="layerwise", output_half_rate=True)
    assert plan.groups == (("features.1.weight",), ("features.3.weight",), ("fc.weight",))
    for level in range(16):
        expected = [
            round_half_up(235200 * 0.8**level),
            round_half_up(30000 * 0.8**level),
            round_half_up(1000 * 0.9**level),
        ]
        assert list(plan.kept[level]) == expected
    assert plan.compression(15) == pytest.approx(sum(LENET300.values()) / sum(plan.kept[15]))
    assert 100 / plan.compression(15) == pytest.approx(3.58, abs=0.01)  # the paper's 3.6%


def test_global_plan_with_half_rate_output_ranks_the_other_layers_together():
    plan = pruning_plan(LENET300, levels=2, output_half_rate=True)
    assert plan.groups == (("features.1.weight", "features.3.weight"), ("fc.weight",))
    assert plan.kept[2] == (round_half_up(265200 * 0.64), round_half_up(1000 * 0.81))


def test_plan_min_kept_floors_each_layer_and_drops_repeated_levels():
    plan = pruning_plan({"a": 400, "b": 200}, levels=40, rate=0.25, scope="layerwise", min_kept=2)
    assert plan.kept[-1] == (2, 2)
    assert len(set(plan.kept)) == len(plan.kept)  # no level repeats the one before
    assert all(
        a >= b
        for before, after in itertools.pairwise(plan.kept)
        for a, b in zip(before, after, strict=True)
    )


@pytest.mark.parametrize(
    "kwargs",
    [{"rate": 1.0}, {"rate": 0.0}, {"levels": -1}, {"scope": "rowwise"}],
)
def test_plan_rejects_bad_arguments(kwargs):
    with pytest.raises(PaiError):
        pruning_plan(LENET300, **{"levels": 2, **kwargs})
    with pytest.raises(PaiError, match="half-rate"):
        pruning_plan(LENET300, levels=2, targets=(10,), output_half_rate=True)


def test_imp_loop_rewinds_before_every_level_with_any_trainer():
    """The loop alone, with a stand-in 'training' that moves every live weight."""
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 2))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
    rewind_state = {k: v.clone() for k, v in model.state_dict().items()}
    plan = pruning_plan({"0.weight": 30, "1.weight": 10}, levels=4, scope="layerwise")
    seen = []

    def train_level(level, masks):
        assert_states_equal(model.state_dict(), masked(rewind_state, masks))
        seen.append((level, masks.layer_kept()))
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=generator))
            masks.apply(model)

    masks = imp_loop(model, Masks.dense(model), plan, train_level, rewind_state=rewind_state)
    assert [level for level, _ in seen] == [1, 2, 3, 4]
    assert [tuple(kept.values()) for _, kept in seen] == list(plan.kept[1:])
    assert [round_half_up(30 * 0.8**level) for level in range(1, 5)] == [24, 19, 15, 12]
    assert masks.layer_kept() == {"0.weight": 12, "1.weight": 4}


# --- configuration --------------------------------------------------------------------------


def test_config_normalizes_steps_and_pins_its_hash():
    config = ImpConfig("lenet300", "mnist", TrainConfig(), rewind=0)
    assert config.rewind == "0it"
    assert ImpConfig("lenet300", "mnist", TrainConfig(), rewind="500").rewind == "500it"
    assert ImpConfig("lenet300", "mnist", TrainConfig(), rewind="2ep").rewind == "2ep"
    # controls are separate runs: they do not change where the levels are stored
    assert config.identity() == dataclasses.replace(config, controls=("reinit",)).identity()
    assert config_hash(config.identity()) == "a77b70d49034"
    # the default rewind schedule spelled out is the same run
    restart = ImpConfig("lenet300", "mnist", TrainConfig(), rewind=0, rewind_schedule="restart")
    assert config_hash(restart.identity()) == "a77b70d49034"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"reset": "restart"},
        {"controls": ("invert",)},
        {"reset": "finetune", "rewind": "5it"},
        {"targets": (0.5,)},
        {"rewind": "5x"},
        {"rewind_schedule": "later", "rewind": "5it"},
        {"rewind_schedule": "resume"},  # resuming at step 0 is restarting
        {"rewind_schedule": "resume", "rewind": "5it", "reset": "lr-rewind"},
    ],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(PaiError):
        ImpConfig("lenet300", "mnist", TrainConfig(), **kwargs)


# --- run_imp --------------------------------------------------------------------------------


@pytest.mark.parametrize("rewind", ["0it", "3it"])
def test_imp_rewinds_prunes_by_trained_magnitude_and_never_revives(mnist_small, tmp_path, rewind):
    config = ImpConfig("lenet300", "mnist", TINY_TRAIN, levels=3, rewind=rewind)
    result = run_imp(config, tmp_path, data=mnist_small, progress=False)
    root = imp_path(config, tmp_path)
    rewind_state = load(root / "rewind.pt")
    init = load(root / "level-00" / "start.pt")
    same_as_init = all(torch.equal(rewind_state[k], init[k]) for k in init)
    assert same_as_init == (rewind == "0it")

    total = sum(LENET300.values())
    assert [lv.kept for lv in result.levels] == [total, *imp_schedule(total, 3)]
    for before, level in itertools.pairwise(result.levels):
        masks = level.masks
        assert masks.kept == level.kept == round_half_up(total * 0.8**level.level)
        # before training: live weights are the step-k weights, pruned ones zero
        assert_states_equal(load(level.path / "start.pt"), masked(rewind_state, masks))
        # pruned weights never come back, in the mask or in the trained weights
        for name, mask in masks.items():
            assert not (mask & ~before.masks[name]).any(), name
            assert torch.all(level.final_state()[name][~mask] == 0), name
        # the survivors are the largest-magnitude live weights of the previous level's training
        trained = before.final_state()
        kept = torch.cat([trained[n][masks[n]].abs() for n in masks])
        dropped = torch.cat([trained[n][before.masks[n] & ~masks[n]].abs() for n in masks])
        assert kept.min() >= dropped.max()


def test_resumed_rewinding_trains_the_rest_of_the_budget_on_the_same_schedule(
    mnist_small, tmp_path
):
    every_step = TINY_TRAIN.replace(eval_every="1it")
    config = ImpConfig(
        "lenet300", "mnist", every_step, levels=2, rewind="4it", rewind_schedule="resume"
    )
    restart = dataclasses.replace(config, rewind_schedule=None)
    assert imp_path(config, tmp_path) != imp_path(restart, tmp_path)
    result = run_imp(config, tmp_path, data=mnist_small, progress=False)
    rewind_state = load(imp_path(config, tmp_path) / "rewind.pt")
    budget = result.levels[0].metrics["steps"]
    dense_history = pd.read_csv(result.levels[0].path / "history.csv")
    for level in result.levels[1:]:
        assert_states_equal(load(level.path / "start.pt"), masked(rewind_state, level.masks))
        assert level.metrics["start_step"] == 4 and level.metrics["steps"] == budget - 4
        history = pd.read_csv(level.path / "history.csv")
        assert history["step"].tolist() == list(range(5, budget + 1))
        # the learning rate at each evaluated step is the dense run's at that step
        lrs = dense_history.set_index("step")["lr"]
        assert history.set_index("step")["lr"].equals(lrs.loc[history["step"]])
    assert result.levels[2].cost.steps == budget + (budget - 4)


def test_layerwise_imp_keeps_the_documented_count_in_every_layer(mnist_small, tmp_path):
    config = ImpConfig(
        "lenet300", "mnist", TINY_TRAIN, levels=2, scope="layerwise", output_half_rate=True
    )
    result = run_imp(config, tmp_path, data=mnist_small, progress=False)
    for level in result.levels:
        rates = {"features.1.weight": 0.2, "features.3.weight": 0.2, "fc.weight": 0.1}
        expected = {
            n: round_half_up(size * (1 - rates[n]) ** level.level) for n, size in LENET300.items()
        }
        assert level.masks.layer_kept() == expected
        assert level.compression == sum(LENET300.values()) / sum(expected.values())


def test_targets_are_reached_exactly(mnist_small, tmp_path):
    config = ImpConfig("lenet300", "mnist", TINY_TRAIN, levels=2, targets=(2, 5))
    result = run_imp(config, tmp_path, data=mnist_small, progress=False)
    total = sum(LENET300.values())
    for target in (2, 5):
        level = result.level_for(target)
        assert level.kept == level.masks.kept == kept_count(total, target)
    assert [lv.kept for lv in result.levels] == [total, *imp_schedule(total, 2, targets=(2, 5))]
    ticket = result.ticket(result.level_for(5).level)
    assert ticket.masks == result.level_for(5).masks
    assert ticket.cost.steps == 6 * result.level_for(5).level  # every earlier level's training


def _outputs(root):
    """Every level's trained weights and metrics (less wall time), for comparing two runs."""
    found = {}
    for level_dir in sorted(p for p in root.iterdir() if p.name.startswith("level-")):
        metrics = json.loads((level_dir / "metrics.json").read_text())
        for key in ("wall_seconds", "eval_seconds"):
            metrics.pop(key, None)
        found[level_dir.name] = (load(level_dir / "final.pt"), metrics)
    return found


def assert_same_outputs(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert_states_equal(a[name][0], b[name][0])
        assert a[name][1] == b[name][1], name


def test_resume_after_interruption_gives_the_uninterrupted_result(
    mnist_small, tmp_path, monkeypatch
):
    config = ImpConfig("lenet300", "mnist", TINY_TRAIN, levels=3, controls=("reinit",))
    run_imp(config, tmp_path / "straight", data=mnist_small, progress=False)
    expected = _outputs(imp_path(config, tmp_path / "straight"))

    # a crash in the middle of level 2's training
    real_train, calls = pai.training.record.train, []

    def crash_on_fourth(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # level 0, level 1, level 1 reinit, then level 2
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    monkeypatch.setattr(pai.training.record, "train", crash_on_fourth)
    with pytest.raises(KeyboardInterrupt):
        run_imp(config, tmp_path / "resumed", data=mnist_small, progress=False)
    root = imp_path(config, tmp_path / "resumed")
    assert (root / "level-01" / "COMPLETE").is_file()
    assert not (root / "level-02" / "COMPLETE").exists()
    monkeypatch.setattr(pai.training.record, "train", real_train)
    run_imp(config, tmp_path / "resumed", data=mnist_small, progress=False)
    assert_same_outputs(_outputs(root), expected)

    # a level whose marker is gone is retrained, with every level and control after it
    (root / "level-02" / "COMPLETE").unlink()
    (root / "level-03" / "final.pt").write_bytes(b"stale")
    calls.clear()
    monkeypatch.setattr(pai.training.record, "train", lambda *a, **k: (calls.append(1), real_train(*a, **k))[1])
    result = run_imp(config, tmp_path / "resumed", data=mnist_small, progress=False)
    assert len(calls) == 4  # levels 2 and 3, each with its reinit control
    assert_same_outputs(_outputs(root), expected)

    # a finished run trains nothing
    calls.clear()
    run_imp(config, tmp_path / "resumed", data=mnist_small, progress=False)
    assert calls == []
    assert len(result.levels) == 4


def test_controls_reinitialize_the_mask_and_shuffle_within_layers(mnist_small, tmp_path):
    config = ImpConfig("lenet300", "mnist", TINY_TRAIN, levels=2, controls=("reinit", "shuffle"))
    result = run_imp(config, tmp_path, data=mnist_small, progress=False)
    rewind_state = load(result.path / "rewind.pt")
    table = pd.read_csv(result.path / "levels.csv")
    assert table.reinit_test_accuracy.isna().tolist() == [True, False, False]
    assert table.shuffle_test_accuracy.notna().sum() == 2
    for level in result.levels[1:]:
        reinit, shuffle = level.controls["reinit"], level.controls["shuffle"]
        assert (reinit.path / "COMPLETE").is_file() and (shuffle.path / "COMPLETE").is_file()
        assert reinit.masks == level.masks
        reinit_start = load(reinit.path / "start.pt")
        for name, mask in level.masks.items():
            assert torch.all(reinit_start[name][~mask] == 0)
            assert not torch.equal(reinit_start[name][mask], rewind_state[name][mask])
        assert shuffle.masks.layer_kept() == level.masks.layer_kept()
        assert shuffle.masks != level.masks
        assert_states_equal(load(shuffle.path / "start.pt"), masked(rewind_state, shuffle.masks))


@pytest.mark.parametrize("reset", ["lr-rewind", "finetune"])
def test_lr_rewind_and_finetune_keep_the_trained_weights(mnist_small, tmp_path, reset):
    train = TINY_TRAIN.replace(lr_schedule="step", milestones=("3it",), gamma=0.1)
    config = ImpConfig("lenet300", "mnist", train, levels=2, reset=reset)
    result = run_imp(config, tmp_path, data=mnist_small, progress=False)
    for before, level in itertools.pairwise(result.levels):
        # the level starts from the previous level's trained weights under the new mask
        assert_states_equal(
            load(level.path / "start.pt"), masked(before.final_state(), level.masks)
        )
    if reset == "lr-rewind":  # the whole schedule again, from its start
        assert result.levels[1].train_config == train
    else:  # the schedule's last learning rate, held constant
        finetune = result.levels[1].train_config
        assert finetune.lr == pytest.approx(0.005)
        assert finetune == train.replace(lr=finetune.lr, lr_schedule="constant", milestones=())
        history = pd.read_csv(result.levels[1].path / "history.csv")
        assert history.lr.tolist() == pytest.approx([0.005, 0.005])
    # weight rewinding from the same init starts level 1 elsewhere
    rewound = run_imp(
        dataclasses.replace(config, reset="rewind"), tmp_path, data=mnist_small, progress=False
    )
    assert not torch.equal(
        rewound.levels[1].start_state()["fc.weight"], result.levels[1].start_state()["fc.weight"]
    )


def test_rewind_beyond_the_budget_is_an_error(mnist_small, tmp_path):
    config = ImpConfig("lenet300", "mnist", TINY_TRAIN, levels=1, rewind="2ep")
    with pytest.raises(PaiError, match="beyond the training budget"):
        run_imp(config, tmp_path, data=mnist_small, progress=False)


# --- CLI ------------------------------------------------------------------------------------


def test_cli_runs_imp_and_prints_the_level_table(data_root, tmp_path, capsys):
    code = main(
        [
            "imp", "--model", "lenet300", "--dataset", "mnist", "--levels", "1",
            "--rewind", "0", "--steps", "2", "--batch-size", "1000", "--eval-every", "2it",
            "--controls", "reinit", "--targets", "2", "--data-root", str(data_root),
            "--device", "cpu", "--out", str(tmp_path),
        ]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "reinit_test_accuracy" in out and "levels.csv" in out
    (levels_csv,) = tmp_path.glob("imp-*/levels.csv")
    table = pd.read_csv(levels_csv)
    assert table.kept.tolist() == [266200, 212960, 133100]
    assert Masks.load(levels_csv.parent / "level-02" / "masks.pt").kept == 133100
    provenance = (levels_csv.parent / "PROVENANCE.md").read_text()
    assert "- command: `pai imp --model lenet300 --dataset mnist --levels 1" in provenance


@pytest.mark.parametrize(
    "flags",
    [
        ["--rewind", "5x"],
        ["--rate", "1"],
        ["--controls", "invert"],
        ["--targets", "0.5"],
        ["--rewind-schedule", "resume"],  # with the default rewind to step 0
        ["--rewind-schedule", "later"],
    ],
)
def test_cli_rejects_bad_flags_with_exit_code_2(tmp_path, flags):
    argv = ["imp", "--model", "lenet300", "--dataset", "mnist", "--steps", "1"]
    with pytest.raises(SystemExit) as exit_info:
        code = main([*argv, "--out", str(tmp_path), *flags])
        raise SystemExit(code)
    assert exit_info.value.code == 2


def test_imp_on_a_training_subset_checks_the_data_it_is_given(data_root):
    config = ImpConfig(
        "lenet300",
        "mnist",
        TrainConfig(budget="2it", batch_size=50),
        levels=1,
        train_per_class=5,
    )
    assert config.identity()["train_per_class"] == 5
    full = load_dataset("mnist", root=data_root, device="cpu")
    with pytest.raises(PaiError, match="training_subset"):
        run_imp(config, "unused", data=full)


@pytest.mark.parametrize("stack", [4, 0, True])
def test_imp_seeds_refuse_a_bad_stack_or_a_stack_with_a_scheduler(tmp_path, stack):
    """From Python as from the CLI: a cluster's task is one run, so stack 4 with a scheduler is
    refused before anything runs, as is a stack that is not a whole number >= 1."""
    config = ImpConfig("lenet300", "mnist", TrainConfig(budget="2it"))
    with pytest.raises(PaiError, match=f"stack={stack}|got {stack!r}"):
        run_imp_seeds(config, [0, 1], tmp_path, scheduler="local:1", stack=stack)
    assert not any(tmp_path.iterdir())
