"""The run store: one directory per run, named by the hash of its canonical config.

A run directory is complete only when its `COMPLETE` marker exists; the marker is written last
and every file is written atomically, so a crash, a kill or Ctrl-C leaves either a finished run
or an unfinished one that is cleared and started again — never a corrupt one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pai.core.atomic import atomic_torch_save, atomic_write_json, atomic_write_text


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
    marker: str = "COMPLETE"  # written last: the run finished


FILES = RunFiles()
MARKER = FILES.marker


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

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, complete={self.complete})"

    @property
    def complete(self) -> bool:
        """Whether the run finished (its marker exists)."""
        return (self.path / MARKER).is_file()

    def start(self) -> None:
        """Clear what an interrupted attempt left and write `config.json`."""
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)
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
