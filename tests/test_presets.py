"""Presets: TOML recipes of results, turned into `pai` argument lists and run in order."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pai.cli import build_parser, main
from pai.core.errors import PaiError
from pai.experiments.presets import PresetRun, load_preset

PRESETS = sorted((Path(__file__).parents[1] / "benchmarks" / "presets").glob("*.toml"))


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "preset.toml"
    path.write_text(text)
    return path


def test_args_become_flags_in_order():
    run = PresetRun(
        "x",
        "compare",
        {"model": "lenet300", "compressions": [2, 4.5], "seeds": 3, "lr": 1e-4,
         "augment": False, "progress": True, "eval-every": "6ep", "per_class": 10},
    )  # fmt: skip
    assert run.argv(["--device", "cpu"]) == [
        "compare", "--model", "lenet300", "--compressions", "2,4.5", "--seeds", "3",
        "--lr", "0.0001", "--no-augment", "--progress", "--eval-every", "6ep",
        "--per-class", "10", "--device", "cpu",
    ]  # fmt: skip


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_every_committed_preset_parses_against_the_current_cli(path):
    preset = load_preset(path)
    assert preset.description and preset.runs
    parser = build_parser()
    for run in preset.runs:
        args = parser.parse_args(run.argv(["--device", "cpu"]))  # exits 2 on a stale flag
        assert args.command == run.command and str(args.out).endswith(run.name)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[run]]\ncommand = 'compare'\n[run.args]\nout = 'a'\nx = {y = 1}\n", "args.x"),
        ("[[run]]\ncommand = 'models'\n", "unknown command in run 1 of preset.toml 'models'"),
        ("colour = 1\n[[run]]\ncommand = 'train'\n", "unknown key in preset.toml 'colour'"),
        ("[[run]]\ncommand = 'train'\nargs = 3\n", "args must be a table"),
        ("description = 'x'\n", "has no [[run]] table"),
        ("threads = 0\n[[run]]\ncommand = 'train'\n", "threads = 0"),
        ("[[run]]\ncommand = 'train'\nname = 'a'\n[[run]]\ncommand = 'imp'\nname = 'a'\n", "'a'"),
        ("[[run]\n", "not valid TOML"),
    ],
)
def test_bad_presets_name_the_bad_value(tmp_path, text, message):
    with pytest.raises(PaiError) as error:
        load_preset(_write(tmp_path, text))
    assert message in str(error.value)


def test_a_missing_preset_file_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["preset", str(tmp_path / "absent.toml")]) == 2
    assert "cannot read preset" in capsys.readouterr().err


TRAIN_PRESET = """
description = "two short trainings"
threads = 1

[[run]]
command = "train"
[run.args]
model = "lenet300"
dataset = "mnist"
steps = 3
out = "{out}/first"

[[run]]
command = "train"
[run.args]
model = "lenet300"
dataset = "mnist"
steps = 3
seed = 1
out = "{out}/second"
"""


def test_a_preset_runs_its_subcommands_and_restores_the_thread_count(tmp_path, data_root):
    path = _write(tmp_path, TRAIN_PRESET.format(out=tmp_path))
    threads = torch.get_num_threads()
    argv = ["preset", str(path), "--data-root", str(data_root), "--device", "cpu"]
    assert main(argv) == 0
    assert torch.get_num_threads() == threads
    for name in ("first", "second"):
        (run_dir,) = (tmp_path / name).glob("train-*")
        assert (run_dir / "COMPLETE").is_file()


def test_only_and_dry_run_select_and_print_without_running(tmp_path, capsys):
    path = _write(tmp_path, TRAIN_PRESET.format(out=tmp_path))
    assert main(["preset", str(path), "--only", "second", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert (
        f"pai train --model lenet300 --dataset mnist --steps 3 --seed 1 --out {tmp_path}/second"
        in out
    )
    assert "/first" not in out and not (tmp_path / "second").exists()
    assert main(["preset", str(path), "--only", "third"]) == 2
    assert "unknown run in preset.toml 'third'; choose one of: first, second" in (
        capsys.readouterr().err
    )


def test_a_failing_run_stops_the_preset_with_its_exit_code(tmp_path, capsys):
    text = TRAIN_PRESET.format(out=tmp_path).replace('model = "lenet300"', 'model = "lenet3"', 1)
    assert main(["preset", str(_write(tmp_path, text)), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'lenet3'" in err and "run 'first' exited with 2" in err
    assert not (tmp_path / "second").exists()
