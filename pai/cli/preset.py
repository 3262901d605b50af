"""`pai preset FILE`: run every subcommand of a preset (see `pai.experiments.presets`), in order.

Each run is an ordinary `pai` subcommand, so it resumes like one (finished runs are not trained
again) and writes its own outputs and provenance. The first run that fails stops the preset
with its exit code; runs already finished stay finished.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from pai.cli.common import add_data_root, add_device, add_scheduler
from pai.experiments.presets import load_preset

# The commands that take --scheduler; the others run in this process.
SCHEDULED_COMMANDS: tuple[str, ...] = ("compare", "imp", "collapse")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "preset",
        help="reproduce a result: run the subcommands of a preset file",
        description=(
            "Run the pai subcommands a preset TOML file lists (benchmarks/presets/ holds the "
            "recipes of the committed results). --data-root and --device are appended to "
            "every run, --scheduler to every compare, imp and collapse run."
        ),
    )
    parser.add_argument("file", help="preset TOML file")
    parser.add_argument(
        "--only", nargs="+", default=None, metavar="NAME", help="run only these runs of the preset"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the commands without running them"
    )
    add_data_root(parser)
    add_device(parser)
    add_scheduler(parser)
    parser.set_defaults(func=run)


def _scheduler_flags(args: argparse.Namespace, command: str) -> list[str]:
    """`--scheduler` for the runs whose command sweeps runs (compare, imp, collapse)."""
    if args.scheduler is None or command not in SCHEDULED_COMMANDS:
        return []
    return ["--scheduler", args.scheduler]


def run(args: argparse.Namespace) -> int:
    from pai.cli import main

    preset = load_preset(args.file)
    runs = preset.select(args.only)
    extra = []
    if args.data_root is not None:
        extra += ["--data-root", str(args.data_root)]
    if args.device is not None:
        extra += ["--device", args.device]
    if args.dry_run:
        if preset.description:
            print(f"# {preset.description}")
        if preset.threads is not None:
            print(f"# with {preset.threads} torch CPU thread(s)")
        for preset_run in runs:
            scheduler = _scheduler_flags(args, preset_run.command)
            print("pai " + shlex.join(preset_run.argv(extra + scheduler)))
        return 0
    import torch

    threads = torch.get_num_threads()
    if preset.threads is not None:
        torch.set_num_threads(preset.threads)
    try:
        for index, preset_run in enumerate(runs, start=1):
            argv = preset_run.argv(extra + _scheduler_flags(args, preset_run.command))
            print(
                f"[{index}/{len(runs)}] {preset_run.name}: pai {shlex.join(argv)}", file=sys.stderr
            )
            try:
                code = main(argv)
            except SystemExit as stop:  # a usage error argparse printed: the run's exit code
                code = int(stop.code or 0)
            if code != 0:
                print(f"pai preset: run {preset_run.name!r} exited with {code}", file=sys.stderr)
                return code
    finally:
        torch.set_num_threads(threads)
    return 0
