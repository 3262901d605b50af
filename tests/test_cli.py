"""The command line: version, help on every subcommand, the model table, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pai import __version__
from pai.cli import COMMANDS, main


def exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code)


def test_version(capsys):
    assert exit_code(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"pai {__version__}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command, capsys):
    assert exit_code([command, "--help"]) == 0
    assert f"usage: pai {command}" in capsys.readouterr().out


def test_models_table_pins_vgg16(capsys):
    assert exit_code(["models", "--dataset", "cifar10"]) == 0
    out = capsys.readouterr().out
    for name in ("lenet300", "conv6", "vgg16", "resnet56", "resnet18"):
        assert name in out
    vgg16 = next(line for line in out.splitlines() if line.startswith("vgg16"))
    assert "14715584" in vgg16.replace(",", "")


def test_bad_choice_is_one_line_and_exit_2(capsys):
    assert exit_code(["models", "--dataset", "imagenet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'imagenet'" in err


def test_console_script_runs():
    done = subprocess.run(
        [sys.executable, "-m", "pai", "--version"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and __version__ in done.stdout
