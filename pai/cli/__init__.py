"""The `pai` command line: one module per subcommand, each exposing `register(subparsers)`."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import shlex
import sys
import traceback

from pai.core.errors import PaiError
from pai.core.version import __version__

# Subcommand modules under pai.cli, in the order `pai --help` lists them.
COMMANDS: tuple[str, ...] = (
    "models",
    "datasets",
    "train",
    "scorers",
    "allocators",
    "prune",
    "collapse",
    "imp",
    "compare",
    "stability",
    "report",
    "preset",
)
DEBUG_ENV = "PAI_DEBUG"  # PAI_DEBUG=1 shows the traceback behind a one-line error, as --debug


class _OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every subcommand registered."""
    parser = _OneLineParser(
        prog="pai",
        description="Compare pruning-at-initialization methods against iterative magnitude pruning.",
    )
    parser.add_argument("--version", action="version", version=f"pai {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    debug_help = f"show the traceback behind an error (also: {DEBUG_ENV}=1)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    for name in COMMANDS:
        importlib.import_module(f"pai.cli.{name}").register(subparsers)
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
        args = build_parser().parse_args(argv)
        command = f"pai {args.command}"
        debug = debug or args.debug
        # The command as typed, for the provenance of what a subcommand writes.
        args.invocation = "pai " + shlex.join(sys.argv[1:] if argv is None else argv)
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
        print(f"{command}: interrupted; finished runs are kept", file=sys.stderr)
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
