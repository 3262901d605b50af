"""Start-up time of the command line: how long `pai --help`, a command's `--help`, an argument
error and the listing commands take, best of N runs each in a fresh interpreter.

With `--before DIR` (a checkout of an earlier commit, e.g. `git worktree add /tmp/cli-before
<commit>`) the same commands also run with DIR first on PYTHONPATH, and the report gives both
times and their ratio. Usage:

    python benchmarks/bench_cli.py --before /tmp/cli-before --repeat 5 --out results/perf/cli.md
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pai.core.atomic import atomic_write_text
from pai.report.provenance import current_command, git_commit, machine_description

ROOT = Path(__file__).resolve().parents[1]
# (what is timed, the argv of `pai`); argument errors name a model, dataset or flag that no run
# can use, so nothing is trained or written.
_COMPARE = ["compare", "--dataset", "mnist", "--compressions", "4", "--out", "x", "--epochs", "1"]
CASES: tuple[tuple[str, list[str]], ...] = (
    ("pai --help", ["--help"]),
    ("pai compare --help", ["compare", "--help"]),
    ("pai imp --help", ["imp", "--help"]),
    ("pai collapse --help", ["collapse", "--help"]),
    ("pai prune --help", ["prune", "--help"]),
    ("pai train --help", ["train", "--help"]),
    (
        "argument error: pai compare --model nope ...",
        [*_COMPARE, "--model", "nope", "--methods", "random"],
    ),
    (
        "argument error: pai compare --methods nope ...",
        [*_COMPARE, "--model", "lenet300", "--methods", "nope"],
    ),
    (
        "argument error: pai imp --criterion nope ...",
        ["imp", "--model", "lenet300", "--dataset", "mnist", "--out", "x", "--epochs", "1",
         "--criterion", "nope"],
    ),
    (
        "argument error: pai collapse --scorers nope ...",
        ["collapse", "--model", "lenet300", "--dataset", "mnist", "--out", "x",
         "--scorers", "nope"],
    ),
    (
        "argument error: pai train without a budget",
        ["train", "--model", "lenet300", "--dataset", "mnist", "--out", "x"],
    ),
    ("pai scorers", ["scorers"]),
    ("pai models", ["models"]),
)  # fmt: skip


def time_command(argv: list[str], source: Path, repeat: int, workdir: Path) -> tuple[float, str]:
    """Best wall time in seconds of `pai ARGV` with `source` first on the import path, and the
    pai package file it imported (so a wrong path cannot go unnoticed)."""
    code = (
        "import sys, pai; print(pai.__file__, file=sys.stderr); "
        f"from pai.cli import main; sys.exit(main({argv!r}))"
    )
    env = {**os.environ, "PYTHONPATH": str(source)}
    best, origin = float("inf"), ""
    for _ in range(repeat):
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=workdir, env=env, capture_output=True, text=True
        )
        best = min(best, time.perf_counter() - start)
        origin = result.stderr.splitlines()[0] if result.stderr else ""
    return best, origin


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, default=None, help="checkout of the baseline")
    parser.add_argument("--repeat", type=int, default=5, help="runs per command (best is kept)")
    parser.add_argument("--out", type=Path, default=None, help="markdown report to write")
    args = parser.parse_args()

    sources = {"after": ROOT} | ({"before": args.before.resolve()} if args.before else {})
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for label, argv in CASES:
            times = {}
            for name, source in sources.items():
                seconds, origin = time_command(argv, source, args.repeat, Path(workdir))
                if not origin.startswith(str(source)):
                    raise SystemExit(f"{label}: imported {origin!r}, not pai from {source}")
                times[name] = seconds
            rows.append((label, times))
            print(label, {name: round(t, 3) for name, t in times.items()}, flush=True)

    header = "| command | before (s) | after (s) | before / after |\n|---|---:|---:|---:|\n"
    if args.before is None:
        header = "| command | after (s) |\n|---|---:|\n"
    lines = []
    for label, times in rows:
        if "before" in times:
            ratio = times["before"] / times["after"]
            lines.append(
                f"| {label} | {times['before']:.3f} | {times['after']:.3f} | {ratio:.1f} |"
            )
        else:
            lines.append(f"| {label} | {times['after']:.3f} |")
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    before = f"- before: {git_commit(args.before)} ({args.before})\n" if args.before else ""
    text = (
        "# Command-line start-up time\n\n"
        f"Best of {args.repeat} runs, each a fresh `python -c 'from pai.cli import main; ...'`.\n\n"
        + header
        + "\n".join(lines)
        + "\n\n## Provenance\n\n"
        f"- command: `{current_command()}`\n"
        f"- after: {git_commit(ROOT)}\n"
        + before
        + f"- machine: {machine_description()}; load average {load} (1, 5, 15 min)\n"
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n"
    )
    if args.out is not None:
        atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
