"""Fixtures shared by the test files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real MNIST and Fashion-MNIST: $PAI_DATA_ROOT, else ../shared/data beside the clone."""
    root = Path(os.environ.get("PAI_DATA_ROOT") or Path(__file__).parents[2] / "shared" / "data")
    if not (root / "MNIST").is_dir() or not (root / "FashionMNIST").is_dir():
        pytest.skip(f"real MNIST/Fashion-MNIST not found in {root}; set PAI_DATA_ROOT to them")
    return root
