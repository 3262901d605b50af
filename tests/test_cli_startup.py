"""The command line starts without the heavy libraries: `pai --help`, every command's `--help`
and every argument error that needs no model or data import neither torch nor the table and
plotting stack (they are blocked from import in a subprocess, so a module-level import of one
fails the test). Names are checked against lists read without torch: each is tested equal to
the registry it stands for. Ctrl-C while importing is answered as later."""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from pai.cli import COMMAND_HELP, build_parser, command_in
from pai.cli.common import MODEL_NAMES
from pai.core.errors import INTERRUPTED

BLOCKED = ("torch", "torchvision", "pandas", "seaborn", "scipy", "matplotlib")


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def run_blocked(argv: list[str]) -> subprocess.CompletedProcess:
    """`pai ARGV` in a fresh interpreter where importing any of BLOCKED raises ImportError."""
    prelude = "; ".join(f"sys.modules[{name!r}] = None" for name in BLOCKED)
    return run_python(f"import sys; {prelude}; from pai.cli import main; sys.exit(main({argv!r}))")


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


@pytest.mark.parametrize("command", COMMAND_HELP)
def test_command_help_without_heavy_imports(command):
    result = run_blocked([command, "--help"])
    assert result.returncode == 0, result.stderr
    assert f"usage: pai {command}" in result.stdout


def test_compare_help_shows_every_methods_options_without_heavy_imports():
    result = run_blocked(["compare", "--help"])
    for flag in ("--imp-rate", "--transfer-method", "--earlybird-epsilon", "--supermask-rule"):
        assert flag in result.stdout


COMPARE = ["compare", "--dataset", "mnist", "--compressions", "4", "--out", "x", "--epochs", "1"]
IMP = ["imp", "--model", "lenet300", "--dataset", "mnist", "--out", "x", "--epochs", "1"]
COLLAPSE = ["collapse", "--model", "lenet300", "--dataset", "mnist", "--out", "x"]
PRUNE = ["prune", "--model", "lenet300", "--dataset", "mnist", "--out", "x", "--compression", "4"]
TRAIN = ["train", "--model", "lenet300", "--dataset", "mnist", "--out", "x"]


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (TRAIN, "--epochs"),
        (["train", "--model", "nope", "--dataset", "mnist", "--out", "x", "--epochs", "1"], "nope"),
        ([*COMPARE, "--model", "nope", "--methods", "random"], "unknown model 'nope'"),
        ([*COMPARE[:2], "nope", *COMPARE[3:], "--model", "lenet300", "--methods", "random"],
         "unknown dataset 'nope'"),
        ([*COMPARE, "--model", "lenet300", "--methods", "nope"], "unknown method 'nope'"),
        ([*COMPARE, "--model", "lenet300", "--methods", "random,random"], "'random' twice"),
        ([*COMPARE, "--model", "lenet300", "--methods", "random", "--scope", "nope"],
         "unknown scope 'nope'"),
        ([*COMPARE, "--model", "lenet300", "--methods", "random", "--sanity", "nope"], "nope"),
        ([*COMPARE, "--model", "lenet300", "--methods", "earlybird", "--earlybird-epsilon", "3"],
         "epsilon"),
        ([*COMPARE, "--model", "lenet300", "--methods", "imp", "--imp-criterion", "nope"],
         "unknown criterion 'nope'"),
        ([*IMP, "--criterion", "nope"], "'nope'"),
        ([*IMP, "--reset", "nope"], "'nope'"),
        ([*COLLAPSE, "--scorers", "nope"], "unknown scorer 'nope'"),
        ([*COLLAPSE, "--scorers", "random,random"], "'random' twice"),
        ([*COLLAPSE, "--criterion", "nope"], "'nope'"),
        ([*PRUNE, "--scorer", "nope"], "unknown scorer 'nope'"),
        ([*PRUNE, "--scorer", "random", "--schedule", "nope"], "'nope'"),
    ],
)  # fmt: skip
def test_argument_error_without_heavy_imports(argv, names):
    """One line on stderr naming the bad value, exit code 2, nothing on stdout before it."""
    result = run_blocked(argv)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and names in lines[0], result.stderr
    assert result.stdout == ""


def test_model_names_are_the_zoo():
    from pai.models import available_models

    assert list(MODEL_NAMES) == available_models()


def test_declared_options_are_the_methods_options():
    """Every method's `Options` is the class `pai.options` declares for it, and only methods
    with options declare one."""
    from pai.search.methods import get_search, method_names, options_class

    for name in method_names():
        assert options_class(name) is get_search(name).Options, name


def test_declared_names_are_the_registries_names():
    from pai.core.plugins import ALLOCATORS, CRITERIA, SCORERS, declared_names
    from pai.pruning.allocators import allocator_entries
    from pai.pruning.criteria import criterion_entries
    from pai.pruning.registry import scorer_entries

    for group, entries in [(SCORERS, scorer_entries), (ALLOCATORS, allocator_entries),
                           (CRITERIA, criterion_entries)]:  # fmt: skip
        assert declared_names(group) == [entry.name for entry in entries()], group


# An import hook that raises KeyboardInterrupt when MODULE is imported: Ctrl-C at that moment.
INTERRUPT_AT = """
import sys
class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            raise KeyboardInterrupt
sys.meta_path.insert(0, Interrupt())
sys.argv = ["pai", *{argv!r}]
from pai.__main__ import main
sys.exit(main())
"""


@pytest.mark.parametrize(
    ("module", "argv", "line"),
    [
        ("pai.cli", ["--help"], f"pai: {INTERRUPTED}"),  # importing the command line itself
        ("pai.cli.compare", ["compare", "--help"], f"pai: {INTERRUPTED}"),  # a command's parser
        ("torch", ["models"], f"pai models: {INTERRUPTED}"),  # what the command imports
    ],
)
def test_ctrl_c_while_importing_is_one_line_and_exit_130(module, argv, line):
    result = run_python(INTERRUPT_AT.format(module=module, argv=argv))
    assert result.returncode == 130
    assert result.stderr.splitlines() == [line]


def test_the_console_script_answers_ctrl_c_while_importing():
    (script,) = entry_points(group="console_scripts", name="pai")
    assert script.value == "pai.__main__:main"


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
