"""The run store: one directory per run, named by the hash of its canonical config.

A run directory is complete only when its `COMPLETE` marker exists; the marker is written last
and every file is written atomically, so a crash, a kill or Ctrl-C leaves either a finished run
or an unfinished one that is cleared and started again — never a corrupt one.

A complete run can still be damaged afterwards (a file truncated, emptied or replaced, the
directory replaced by a file). `Run.verified(contents)` checks what a run of its kind must hold
(`Contents`: file name -> keys) and moves a damaged run aside to `<name>.damaged-<n>`, never
deleting it, so that it is computed again.

Runs are claimed before they are computed: `Run.claim()` holds an exclusive `flock` on a lock
file beside the directory (`.<name>.lock`), so two processes, on one machine or on a shared
filesystem, never compute one run at the same time; the second finds it complete once it holds
the lock. A lock dies with its process (kill -9 included), so no stale claim outlives a dead
worker, as a claim file created with O_EXCL would without a lease and a timeout. An unfinished
run keeps its training checkpoint (`start`), so a killed run resumes where it was.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pai.core.atomic import atomic_torch_save, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunFiles:
    """The name of every file a run directory may hold, in one place."""

    config: str = "config.json"  # the canonical config the hash is taken of
    metrics: str = "metrics.json"  # what the training measured
    history: str = "history.csv"  # one row per evaluation
    masks: str = "masks.pt"  # the mask trained under ({name: bool tensor})
    start: str = "start.pt"  # the state_dict training started from (pruned weights zero)
    final: str = "final.pt"  # the state_dict at the end of training
    row: str = "row.json"  # a comparison run's row of runs.csv
    rewind: str = "rewind.pt"  # an IMP run's rewinding weights
    levels: str = "levels.csv"  # an IMP run's table of levels
    checkpoint: str = "checkpoint.pt"  # the training state of an unfinished run
    marker: str = "COMPLETE"  # written last: the run finished


FILES = RunFiles()
MARKER = FILES.marker
# What a run of some kind must hold to be read back: file name -> the keys the file must have
# (a JSON object's keys, a tensor file's names; none for a CSV file, which must not be empty).
Contents = Mapping[str, Sequence[str]]
QUARANTINE = ".damaged-"  # a damaged run moved aside is `<name>.damaged-<n>`


def file_problem(path: Path, keys: Sequence[str] = ()) -> str | None:
    """Why the file at `path` does not read back as pai wrote it, in a few words; None if it does.

    `.json`: a JSON object with every key of `keys`; `.pt`: a `torch.save`d dict of tensors
    (loaded with `weights_only=True`, memory-mapped, so checking a large file is cheap) with
    every name of `keys`; `.csv`: not empty; any other file: present.
    """
    import torch

    name = path.name
    if not path.is_file():
        return f"{name} is missing" if not path.exists() else f"{name} is not a file"
    if path.suffix not in (".json", ".pt"):
        if path.suffix == ".csv" and not path.read_text().strip():
            return f"{name} is empty"
        return None
    if path.suffix == ".pt" and not zipfile.is_zipfile(path):
        return f"{name} is not a torch archive (empty, truncated or overwritten)"
    try:
        if path.suffix == ".json":
            value = json.loads(path.read_text())
        else:
            value = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # whatever the reader raises, the file does not read back
        reason = str(error).strip().split(". ")[0].splitlines()
        return f"{name} does not read back ({type(error).__name__}: {reason[0] if reason else ''})"
    if not isinstance(value, dict):
        return f"{name} holds a {type(value).__name__}, not a mapping"
    if path.suffix == ".pt" and not all(isinstance(v, torch.Tensor) for v in value.values()):
        return f"{name} holds something other than tensors"
    missing = [key for key in keys if key not in value]
    if missing:
        return f"{name} lacks {', '.join(map(repr, missing))}"
    return None


def canonical(config: Any) -> Any:
    """A JSON-ready form of a config: dataclasses become dicts without their None fields.

    Leaving out None fields lets a later version add a field defaulting to None without
    changing the hash of any existing run.
    """
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {
            f.name: canonical(getattr(config, f.name))
            for f in dataclasses.fields(config)
            if getattr(config, f.name) is not None
        }
    if isinstance(config, Mapping):
        return {str(k): canonical(v) for k, v in config.items() if v is not None}
    if isinstance(config, (list, tuple)):
        return [canonical(v) for v in config]
    if isinstance(config, Path):
        return str(config)
    return config


def config_hash(config: Any) -> str:
    """The first 12 hex digits of the SHA-256 of the config's canonical JSON."""
    text = json.dumps(canonical(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class Run:
    """A run directory `<root>/<kind>-<hash>/` and the files in it."""

    def __init__(self, root: str | Path, kind: str, config: Any):
        self.config = config
        self.kind = kind
        self.hash = config_hash(config)
        self.path = Path(root) / f"{kind}-{self.hash}"

    @classmethod
    def at(cls, path: str | Path) -> Run:
        """The run stored at `path`, `<kind>-<hash>`, as found in a store (its config unread)."""
        run = cls.__new__(cls)
        run.path = Path(path)
        run.kind, _, run.hash = run.path.name.rpartition("-")
        run.config = None
        return run

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, complete={self.complete})"

    @property
    def complete(self) -> bool:
        """Whether the run finished (its marker exists)."""
        return (self.path / MARKER).is_file()

    def damage(self, contents: Contents) -> str | None:
        """Why this run cannot be used as finished, or None.

        Damaged: the run path is not a directory, or the run is complete but a file of
        `contents` is missing, does not read back or lacks a key (`file_problem`). An unfinished
        run is not damaged: it is simply started again.
        """
        if self.path.exists() and not self.path.is_dir():
            return f"{self.path.name} is a file, not a run directory"
        if not self.complete:
            return None
        for name, keys in contents.items():
            problem = file_problem(self.path / name, keys)
            if problem is not None:
                return problem
        return None

    def quarantine(self, reason: str) -> Path:
        """Move this run aside to `<path>.damaged-<n>` (the first n free), logging one line."""
        n = 1
        while (aside := self.path.with_name(f"{self.path.name}{QUARANTINE}{n}")).exists():
            n += 1
        try:
            self.path.rename(aside)
        except FileNotFoundError:  # another process moved it aside first
            return aside
        log.warning("damaged run %s: %s; moved to %s, computing it again", self.path, reason, aside)
        return aside

    def verified(self, contents: Contents) -> bool:
        """Whether this run is complete and sound (`damage`), so it can be reused as it is.

        A damaged run is moved aside first (`quarantine`), so that it is computed again.
        """
        problem = self.damage(contents)
        if problem is not None:
            self.quarantine(problem)
            return False
        return self.complete

    @property
    def lock_path(self) -> Path:
        """The lock file of `claim()`, beside the directory (hidden, so globs skip it)."""
        return self.path.parent / f".{self.path.name}.lock"

    @contextmanager
    def claim(self) -> Iterator[None]:
        """Hold this run's exclusive lock for the duration of the block (waiting for it)."""
        from filelock import FileLock

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(self.lock_path):
            yield

    def start(self) -> None:
        """Clear what an earlier attempt left and write `config.json`.

        A finished run, or an unfinished one without a checkpoint, starts from an empty
        directory. An unfinished one keeps only its checkpoint, which the training resumes from
        when it still matches (`pai.training.checkpoint`).
        """
        checkpoint = self.path / FILES.checkpoint
        if self.path.exists() and (self.complete or not checkpoint.is_file()):
            shutil.rmtree(self.path)
        elif self.path.exists():
            for entry in self.path.iterdir():
                if entry != checkpoint:
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path / FILES.config, {"kind": self.kind, **canonical(self.config)})

    def finish(self) -> None:
        """Write the completion marker: the last file of every run."""
        atomic_write_json(self.path / MARKER, {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    def write_json(self, name: str, obj: Any) -> Path:
        return atomic_write_json(self.path / name, obj)

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text())

    def write_text(self, name: str, text: str) -> Path:
        return atomic_write_text(self.path / name, text)

    def write_csv(self, name: str, rows: Sequence[Mapping[str, Any]]) -> Path:
        return atomic_write_text(self.path / name, pd.DataFrame(list(rows)).to_csv(index=False))

    def save_tensors(self, name: str, obj: Any) -> Path:
        return atomic_torch_save(obj, self.path / name)
