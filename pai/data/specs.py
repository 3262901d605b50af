"""What each supported dataset looks like: input shape, classes, normalization.

Models are built from these specs without loading any data, so the zoo and the data loader
agree on shapes by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

from pai.core.errors import unknown_name


@dataclass(frozen=True)
class DatasetSpec:
    """Static facts of a dataset; `torchvision_name` is the class in `torchvision.datasets`."""

    name: str
    torchvision_name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_size: int
    test_size: int
    augment: bool  # random crop (4-pixel padding) and horizontal flip on training batches


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("mnist", "MNIST", (1, 28, 28), 10, (0.1307,), (0.3081,), 60000, 10000, False),
        DatasetSpec(
            "fashion-mnist",
            "FashionMNIST",
            (1, 28, 28),
            10,
            (0.2860,),
            (0.3530,),
            60000,
            10000,
            False,
        ),
        DatasetSpec(
            "cifar10",
            "CIFAR10",
            (3, 32, 32),
            10,
            (0.4914, 0.4822, 0.4465),
            (0.2470, 0.2435, 0.2616),
            50000,
            10000,
            True,
        ),
        DatasetSpec(
            "cifar100",
            "CIFAR100",
            (3, 32, 32),
            100,
            (0.5071, 0.4865, 0.4409),
            (0.2673, 0.2564, 0.2762),
            50000,
            10000,
            True,
        ),
    )
}


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of a dataset by name (`mnist`, `fashion-mnist`, `cifar10`, `cifar100`)."""
    try:
        return DATASETS[name]
    except KeyError:
        raise unknown_name("dataset", name, DATASETS) from None
