"""The `pai` command line: one module per subcommand, each exposing `register(subparsers)`."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import shlex
import sys
import traceback
from collections.abc import Collection, Sequence

from pai.core.errors import INTERRUPTED, PaiError
from pai.core.version import __version__

# Subcommand modules under pai.cli with their one-line help, in the order `pai --help` lists
# them. The help is written here, not read from the module, so `pai --help` imports no command
# (tests/test_cli_startup.py checks each entry against what its module registers).
COMMAND_HELP: dict[str, str] = {
    "models": "list the model zoo",
    "datasets": "list datasets, where their files are looked for, and whether they are found",
    "train": "train a model, dense or under a mask",
    "scorers": "list the pruning scorers",
    "allocators": "list the density allocators (--scope)",
    "prune": "prune a model at initialization and write its masks",
    "collapse": "critical compression (layer collapse) of scorers at initialization",
    "imp": "iterative magnitude pruning (lottery tickets), one stored run per level",
    "compare": "train every method's ticket under one budget and tabulate them",
    "stability": "linear mode connectivity: instability of two copies against the rewinding step",
    "report": "rebuild a comparison's or IMP run's tables and figures from its stored runs",
    "preset": "reproduce a result: run the subcommands of a preset file",
}
COMMANDS: tuple[str, ...] = tuple(COMMAND_HELP)
DEBUG_ENV = "PAI_DEBUG"  # PAI_DEBUG=1 shows the traceback behind a one-line error, as --debug


class _OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def command_in(argv: Sequence[str]) -> str | None:
    """The subcommand `argv` runs: its first word that is not an option (the top-level options
    take no value), or None when there is none or it names no command."""
    word = next((word for word in argv if not word.startswith("-")), None)
    return word if word in COMMAND_HELP else None


def build_parser(
    commands: Collection[str] | None = None,
) -> argparse.ArgumentParser:
    """The parser of `pai`, with the subcommands in `commands` registered by their modules (all
    of them when None) and the others as placeholders that carry only their one-line help, so
    that `pai --help` and `pai <command> ...` import that command's module alone."""
    parser = _OneLineParser(
        prog="pai",
        description="Compare pruning-at-initialization methods against iterative magnitude pruning.",
    )
    parser.add_argument("--version", action="version", version=f"pai {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    debug_help = f"show the traceback behind an error (also: {DEBUG_ENV}=1)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    for name, help_text in COMMAND_HELP.items():
        if commands is None or name in commands:
            importlib.import_module(f"pai.cli.{name}").register(subparsers)
        else:
            subparsers.add_parser(name, help=help_text)
    for subparser in subparsers.choices.values():  # `pai compare ... --debug` works too
        subparser.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI. Every failure is one line on stderr naming the bad value or the file:
    bad input exits 2, a file that cannot be written or read exits 1, Ctrl-C (even while the
    command is still starting) exits 130. `--debug` or PAI_DEBUG=1 adds the traceback."""
    command = "pai"
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        words = sys.argv[1:] if argv is None else argv
        args = build_parser([command_in(words)]).parse_args(argv)
        command = f"pai {args.command}"
        debug = debug or args.debug
        # The command as typed, for the provenance of what a subcommand writes.
        args.invocation = "pai " + shlex.join(words)
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
        )
        return int(args.func(args) or 0)
    except PaiError as error:
        return _fail(command, error, 2, debug)
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as error:  # the disk, not the input: no space, no permission, ...
        return _fail(command, error, 1, debug)
    except KeyboardInterrupt:
        print(f"{command}: {INTERRUPTED}", file=sys.stderr)
        return 130


def _fail(command: str, error: BaseException, code: int, debug: bool) -> int:
    """Print `error` as one line on stderr (then its traceback when debugging); return `code`."""
    message = " ".join(str(error).split()) or type(error).__name__
    print(f"{command}: error: {message}", file=sys.stderr)
    if debug:
        traceback.print_exception(error, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
