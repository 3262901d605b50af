"""Errors the library raises on bad input, and on files it cannot write.

Every error names the bad value and what is allowed; the CLI prints its message as one line on
stderr and exits with code 2 (`PaiError`) or 1 (`WriteError` and other `OSError`s: the disk,
not the input, is at fault).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

# What the command line prints after the command's name on Ctrl-C, whenever it comes.
INTERRUPTED = "interrupted; finished runs are kept"


class PaiError(ValueError):
    """A value given to pai is not one it accepts (the message says which and why)."""


class DataNotFoundError(PaiError, FileNotFoundError):
    """A dataset's files are absent and could not be downloaded."""


class WriteError(OSError):
    """A file could not be written (disk full, file-size limit, no permission).

    It keeps the cause's errno and names the file pai was writing, not its temporary name:
    `str()` reads `cannot write 'runs/x/masks.pt': No space left on device (errno 28)`.
    """

    def __init__(self, path: object, cause: OSError):
        super().__init__(cause.errno, cause.strerror or str(cause), str(path))

    def __str__(self) -> str:
        return f"cannot write {self.filename!r}: {self.strerror} (errno {self.errno})"


def unknown_name(kind: str, name: object, allowed: Iterable[str]) -> PaiError:
    """The error for a name that is not among the allowed ones, listing them."""
    return PaiError(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(allowed))}")


def refuse_repeats(kind: str, values: Sequence[object]) -> None:
    """PaiError when `values` names an item twice: a repeat is never dropped without a word."""
    seen: set[object] = set()
    for value in values:
        if value in seen:
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            raise PaiError(f"{kind} lists {shown!r} twice; give each once")
        seen.add(value)
