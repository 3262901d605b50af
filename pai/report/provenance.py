"""Provenance of a committed result: the command, commit, machine, date and wall time.

Every table and figure in `results/` carries one, so a reader can tell how each number was
measured and run it again.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

from pai.core.atomic import atomic_write_text


def git_commit(cwd: str | Path | None = None) -> str:
    """The checked-out commit (with `-dirty` when the tree has changes), or `unknown`."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def _cpu_name() -> str:
    """The CPU model as the OS reports it (Linux), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description(device: torch.device | str | None = None) -> str:
    """CPU, core count, torch threads, accelerator (if used), Python and torch versions, in one
    line. CPU results depend on the thread count (it orders floating-point reductions)."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    accelerator = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else "no accelerator used"
    )
    cpu = _cpu_name()
    threads = torch.get_num_threads()
    return (
        f"{platform.system()} {cpu}, {os.cpu_count()} cores, torch threads: {threads}, "
        f"{accelerator}; Python {platform.python_version()}, torch {torch.__version__}"
    )


def current_command() -> str:
    """The command line of this process, as a user would type it from the current folder."""
    script = Path(sys.argv[0])
    if script.suffix == ".py":
        with contextlib.suppress(ValueError):
            script = script.resolve().relative_to(Path.cwd())
        return shlex.join(["python", str(script), *sys.argv[1:]])
    return shlex.join([script.name, *sys.argv[1:]])


def provenance_markdown(
    command: str,
    wall_seconds: float,
    *,
    device: torch.device | str | None = None,
    notes: str = "",
) -> str:
    """The PROVENANCE.md text for a result produced by `command`."""
    lines = [
        "# Provenance",
        "",
        f"- command: `{command}`",
        f"- commit: {git_commit()}",
        f"- machine: {machine_description(device)}",
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- wall time: {wall_seconds:.1f} s ({wall_seconds / 60:.1f} min)",
    ]
    if notes:
        lines += ["", notes.strip()]
    return "\n".join(lines) + "\n"


def write_provenance(
    folder: str | Path,
    command: str,
    wall_seconds: float,
    *,
    device: torch.device | str | None = None,
    notes: str = "",
) -> Path:
    """Write `folder/PROVENANCE.md` atomically."""
    text = provenance_markdown(command, wall_seconds, device=device, notes=notes)
    return atomic_write_text(Path(folder) / "PROVENANCE.md", text)
