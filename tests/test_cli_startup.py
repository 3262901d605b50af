"""The command line starts without the heavy libraries: `pai --help`, a command's `--help` and an
argument error import neither torch nor the table and plotting stack (they are blocked from
import in a subprocess, so a module-level import of one fails the test)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from pai.cli import COMMAND_HELP, build_parser, command_in

BLOCKED = ("torch", "torchvision", "pandas", "seaborn", "scipy", "matplotlib")
# Commands whose parser is built from torch-free modules.
LIGHT_COMMANDS = (
    "models", "datasets", "train", "scorers", "allocators", "stability", "report", "preset",
)  # fmt: skip


def run_blocked(argv: list[str]) -> subprocess.CompletedProcess:
    """`pai ARGV` in a fresh interpreter where importing any of BLOCKED raises ImportError."""
    prelude = "; ".join(f"sys.modules[{name!r}] = None" for name in BLOCKED)
    code = f"import sys; {prelude}; from pai.cli import main; sys.exit(main({argv!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_blocking_works():
    """The prelude does block: a command that needs torch to run fails under it."""
    result = run_blocked(["models"])
    assert result.returncode != 0
    assert "torch" in result.stderr


def test_top_level_help_imports_no_command():
    result = run_blocked(["--help"])
    assert result.returncode == 0, result.stderr
    for name in COMMAND_HELP:
        assert name in result.stdout


@pytest.mark.parametrize("command", LIGHT_COMMANDS)
def test_command_help_without_heavy_imports(command):
    result = run_blocked([command, "--help"])
    assert result.returncode == 0, result.stderr
    assert f"usage: pai {command}" in result.stdout


def test_argument_error_without_heavy_imports():
    result = run_blocked(["train", "--model", "lenet300", "--dataset", "mnist", "--out", "x"])
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "--epochs" in lines[0], result.stderr


def test_help_table_matches_the_modules():
    """`pai --help` lists each command with the help its module registers, in COMMAND_HELP's
    order."""
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    registered = {action.dest: action.help for action in subparsers._choices_actions}
    assert list(registered) == list(COMMAND_HELP)
    assert registered == COMMAND_HELP


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["--help"], None),
        ([], None),
        (["-v", "--debug", "compare", "--model", "x"], "compare"),
        (["models", "--dataset", "mnist"], "models"),
        (["nope"], None),
    ],
)
def test_command_in(argv, command):
    assert command_in(argv) == command


def test_only_the_selected_command_is_registered():
    """A placeholder parser holds only --help and --debug: the real one has the command's
    flags."""
    parser = build_parser(["models"])
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    models = {o for a in subparsers.choices["models"]._actions for o in a.option_strings}
    compare = {o for a in subparsers.choices["compare"]._actions for o in a.option_strings}
    assert "--dataset" in models
    assert compare == {"-h", "--help", "--debug"}
