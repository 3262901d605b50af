"""Errors the library raises on bad input.

Every error names the bad value and what is allowed; the CLI prints its message as one line on
stderr and exits with code 2.
"""

from __future__ import annotations

from collections.abc import Iterable


class PaiError(ValueError):
    """A value given to pai is not one it accepts (the message says which and why)."""


class DataNotFoundError(PaiError, FileNotFoundError):
    """A dataset's files are absent and could not be downloaded."""


def unknown_name(kind: str, name: object, allowed: Iterable[str]) -> PaiError:
    """The error for a name that is not among the allowed ones, listing them."""
    return PaiError(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(allowed))}")
