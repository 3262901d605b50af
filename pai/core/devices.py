"""Device choice: never hard-coded; CUDA when available, else CPU."""

from __future__ import annotations

import torch

from pai.core.errors import PaiError


def resolve_device(device: torch.device | str | None = None) -> torch.device:
    """The device named, else CUDA when available, else CPU; a clear error for a bad name."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise PaiError(f"unknown device {device!r}; use e.g. 'cpu', 'cuda' or 'cuda:1'") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise PaiError(
            f"device {str(device)!r} asked for, but CUDA is not available here; use 'cpu'"
        )
    return resolved
