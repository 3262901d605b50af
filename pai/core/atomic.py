"""Atomic file writes: a crash, a kill, Ctrl-C or a full disk never leaves a half-written file
behind, and a failed write is a `WriteError` naming the file and the cause."""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pai.core.errors import WriteError


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it onto `path`.

    An `OSError` on the way (no space left, the file-size limit, no permission) is re-raised as
    a `WriteError` naming `path`; the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise WriteError(path, error) from error
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        tmp.chmod(0o666 & ~_umask())  # mkstemp's 0600 would hide results from other users
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, OSError) and not isinstance(error, WriteError):
            raise WriteError(path, error) from error
        raise
    return path


def _umask() -> int:
    """The process's file-creation mask (reading it means setting it, then restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write text atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write indented, key-sorted JSON atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write bytes atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def torch_bytes(obj: object) -> bytes:
    """What `torch.save(obj)` writes, the same bytes for the same tensors whatever the path.

    `torch.save` to a path names the archive's folder after the file, so saving through a
    temporary name would make identical runs write different files; saved into memory the
    folder is always `archive/`.
    """
    import torch  # here, not at the top: the command line reads this module before any tensor

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def atomic_torch_save(obj: object, path: str | Path) -> Path:
    """`torch.save` atomically, with bytes that depend on `obj` only (`torch_bytes`)."""
    return atomic_write_bytes(path, torch_bytes(obj))
