"""Presets: the whole recipe of a result as a TOML file of `pai` subcommands, run by `pai preset`.

A committed result is only as good as the way to produce it again. A preset names every
subcommand a result folder was made with, flag by flag, so `pai preset FILE` re-runs it and a
test can check that every committed preset still parses against the current CLI. The format:

    description = "what this reproduces"   # one line, shown by --dry-run
    threads = 1                            # optional: torch CPU threads (CPU results depend on it)

    [[run]]
    name = "compare-lenet300"              # optional; default: the last part of args.out
    command = "compare"                    # one of PRESET_COMMANDS
    [run.args]                             # the flags, without their leading dashes
    model = "lenet300"
    compressions = [2, 4, 8]               # a list becomes a comma-separated value
    augment = false                        # a boolean becomes --augment or --no-augment

Machine-specific flags (`--data-root`, `--device`) are left out of presets and given to
`pai preset`, which appends them to every run.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pai.core.errors import PaiError, unknown_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# Subcommands that produce results; the others only print.
PRESET_COMMANDS: tuple[str, ...] = ("train", "prune", "collapse", "imp", "compare", "stability")
_PRESET_KEYS = {"description", "threads", "run"}
_RUN_KEYS = {"name", "command", "args"}


@dataclass(frozen=True)
class PresetRun:
    """One subcommand of a preset: `pai <command> <flags from args>`."""

    name: str
    command: str
    args: Mapping[str, Any]

    def __post_init__(self) -> None:
        self.argv()  # every value must become a flag: a bad one fails when the preset loads

    def argv(self, extra: Sequence[str] = ()) -> list[str]:
        """The argument list of `pai` for this run, with `extra` flags appended."""
        flags = []
        for key, value in self.args.items():
            flag = "--" + key.replace("_", "-")
            if isinstance(value, bool):
                flags.append(flag if value else "--no-" + key.replace("_", "-"))
            elif isinstance(value, list):
                flags += [flag, ",".join(_flag_value(self.name, key, v) for v in value)]
            else:
                flags += [flag, _flag_value(self.name, key, value)]
        return [self.command, *flags, *extra]


@dataclass(frozen=True)
class Preset:
    """A preset file: its description, CPU thread count (None: torch's default) and runs."""

    path: Path
    description: str
    threads: int | None
    runs: tuple[PresetRun, ...]

    def select(self, names: Sequence[str] | None) -> list[PresetRun]:
        """The runs named in `names` (all when None), in preset order."""
        if names is None:
            return list(self.runs)
        known = [run.name for run in self.runs]
        for name in names:
            if name not in known:
                raise unknown_name(f"run in {self.path.name}", name, known)
        return [run for run in self.runs if run.name in names]


def _flag_value(run: str, key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise PaiError(
            f"preset run {run!r}: args.{key} = {value!r} is not allowed; "
            "use a string, a number, a boolean or a list of strings and numbers"
        )
    return str(value)


def _check_keys(where: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    for key in table:
        if key not in allowed:
            raise unknown_name(f"key in {where}", key, sorted(allowed))


def load_preset(path: str | Path) -> Preset:
    """Read and check a preset file; every problem is one `PaiError` naming the bad value."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as error:
        raise PaiError(f"cannot read preset {str(path)!r}: {error.strerror}") from error
    except tomllib.TOMLDecodeError as error:
        raise PaiError(f"preset {str(path)!r} is not valid TOML: {error}") from error
    _check_keys(path.name, data, _PRESET_KEYS)
    threads = data.get("threads")
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise PaiError(f"preset {path.name}: threads = {threads!r}; give a whole number >= 1")
    tables = data.get("run", [])
    if not isinstance(tables, list) or not tables:
        raise PaiError(f"preset {path.name} has no [[run]] table; add at least one")
    runs = []
    for index, table in enumerate(tables, start=1):
        _check_keys(f"run {index} of {path.name}", table, _RUN_KEYS)
        command = table.get("command")
        if command not in PRESET_COMMANDS:
            raise unknown_name(f"command in run {index} of {path.name}", command, PRESET_COMMANDS)
        args = table.get("args", {})
        if not isinstance(args, dict):
            raise PaiError(f"run {index} of {path.name}: args must be a table of flags")
        default_name = Path(str(args["out"])).name if "out" in args else f"run{index}"
        runs.append(PresetRun(str(table.get("name", default_name)), command, args))
    names = [run.name for run in runs]
    duplicate = next((name for name in names if names.count(name) > 1), None)
    if duplicate is not None:
        raise PaiError(f"preset {path.name} names two runs {duplicate!r}; names must differ")
    return Preset(path, str(data.get("description", "")), threads, tuple(runs))
