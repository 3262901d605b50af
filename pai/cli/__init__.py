"""The `pai` command line: one module per subcommand, each exposing `register(subparsers)`."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import shlex
import sys

from pai.core.version import __version__
from pai.core.errors import PaiError

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
    "preset",
)


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
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    for name in COMMANDS:
        importlib.import_module(f"pai.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; bad input is one line on stderr and exit code 2, Ctrl-C is exit 130."""
    args = build_parser().parse_args(argv)
    # The command as typed, for the provenance of what a subcommand writes.
    args.invocation = "pai " + shlex.join(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except PaiError as error:
        print(f"pai {args.command}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"pai {args.command}: interrupted; finished runs are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
