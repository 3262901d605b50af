"""Datasets held whole as tensors on the training device, batched from seeded permutations.

MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 are read through `torchvision.datasets` from its
own folder layout, converted once from torchvision's uint8 arrays (never image by image), and
normalized with the per-channel mean and std of `pai.data.specs`. Batches are index gathers on
the device, and CIFAR augmentation (random crop with 4-pixel padding, horizontal flip) is one
vectorized gather per batch, so the training loop needs no DataLoader and no workers.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import numpy as np
import torch
from torch import Tensor

from pai.core import seeds
from pai.core.devices import resolve_device
from pai.core.errors import DataNotFoundError, PaiError
from pai.data.specs import DATASETS, DatasetSpec, dataset_spec

log = logging.getLogger(__name__)

DATA_ROOT_ENV = "PAI_DATA_ROOT"
DOWNLOAD_SOCKET_TIMEOUT_S = 60.0  # torchvision opens URLs with no timeout of its own


def default_data_root() -> Path:
    """`$PAI_DATA_ROOT` when set (and not empty), else the per-user cache `~/.cache/pai/data`."""
    from_env = os.environ.get(DATA_ROOT_ENV)
    if from_env:
        return Path(from_env).expanduser()
    return Path.home() / ".cache" / "pai" / "data"


def resolve_data_root(root: str | Path | None) -> Path:
    """The folder datasets are looked for in: `root` when given, else `default_data_root()`."""
    return Path(root).expanduser() if root is not None else default_data_root()


def random_crop_flip(
    x: Tensor,
    generator: torch.Generator,
    *,
    padding: int = 4,
    pad_value: float | tuple[float, ...] = 0.0,
) -> Tensor:
    """The standard CIFAR augmentation for a whole batch (N, C, H, W) at once.

    Each image is padded by `padding` pixels of `pad_value` (a scalar or one value per
    channel), cropped back to H x W at an offset drawn uniformly from {0..2*padding} in each
    axis, then mirrored left-right with probability 1/2 (He et al. 2016). Offsets, then flips,
    are drawn from `generator` on its own device and moved to `x`'s device.
    """
    n, channels, height, width = x.shape
    offsets = torch.randint(
        0, 2 * padding + 1, (2, n), generator=generator, device=generator.device
    )
    flips = torch.rand(n, generator=generator, device=generator.device) < 0.5
    offsets, flips = offsets.to(x.device), flips.to(x.device)

    padded = x.new_empty(n, channels, height + 2 * padding, width + 2 * padding)
    padded[:] = torch.as_tensor(pad_value, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
    padded[:, :, padding : padding + height, padding : padding + width] = x

    rows = offsets[0, :, None] + torch.arange(height, device=x.device)  # (N, H)
    cols = offsets[1, :, None] + torch.arange(width, device=x.device)  # (N, W)
    # a flip reads the crop's columns backwards
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    # one gather over the flattened padded plane: position (r, c) is r * padded_width + c
    source = rows[:, :, None] * padded.shape[-1] + cols[:, None, :]  # (N, H, W)
    source = source.reshape(n, 1, height * width).expand(n, channels, height * width)
    return padded.flatten(2).gather(2, source).reshape(n, channels, height, width)


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise PaiError(f"batch size {batch_size!r} is not allowed; use a whole number >= 1")


def _permutation(n: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """A permutation of range(n) drawn on the generator's device, moved to `device`."""
    return torch.randperm(n, generator=generator, device=generator.device).to(device)


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a dataset, held whole on one device.

    `x` is float32 (N, C, H, W), normalized per channel; `y` is int64 (N,). `pad_value` is the
    normalized value of a raw black pixel per channel: random crops pad with it, which is what
    torchvision's `RandomCrop(32, padding=4)` does when it runs before `Normalize`.
    """

    x: Tensor
    y: Tensor
    num_classes: int
    pad_value: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.x.ndim != 4 or self.y.ndim != 1 or len(self.x) != len(self.y):
            raise PaiError(
                f"a split needs x of shape (N, C, H, W) and y of shape (N,); "
                f"got {tuple(self.x.shape)} and {tuple(self.y.shape)}"
            )

    def __len__(self) -> int:
        return len(self.y)

    @property
    def device(self) -> torch.device:
        return self.x.device

    def num_batches(self, batch_size: int, *, drop_last: bool = False) -> int:
        """How many batches one pass yields (an epoch's number of steps)."""
        _check_batch_size(batch_size)
        return len(self) // batch_size if drop_last else -(-len(self) // batch_size)

    def batches(
        self,
        batch_size: int,
        generator: torch.Generator,
        *,
        shuffle: bool = True,
        augment: bool = False,
        drop_last: bool = False,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch of (x, y) batches: every example exactly once (the last batch may be short).

        The order is a permutation drawn from `generator` on the generator's own device and
        moved to the data's device, so a CPU generator gives the same order whatever device
        holds the data. With `augment`, each batch goes through `random_crop_flip` with the
        same generator. Draws happen as the iterator advances: the permutation at the first
        batch, then each batch's augmentation.
        """
        _check_batch_size(batch_size)
        count = len(self)
        if shuffle:
            order = _permutation(count, generator, self.device)
        else:
            order = torch.arange(count, device=self.device)
        stop = count - count % batch_size if drop_last else count
        for start in range(0, stop, batch_size):
            index = order[start : start + batch_size]
            x = self.x[index]
            if augment:
                x = random_crop_flip(x, generator, pad_value=self.pad_value)
            yield x, self.y[index]

    def eval_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """(x, y) batches in stored order, un-augmented views with no copies: for evaluation."""
        _check_batch_size(batch_size)
        for start in range(0, len(self), batch_size):
            yield self.x[start : start + batch_size], self.y[start : start + batch_size]


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded dataset: its spec, where it was read from, and its splits on one device.

    `validation` is None unless a hold-out was requested; its examples are not in `train`.
    """

    spec: DatasetSpec
    root: Path
    train: Split
    test: Split
    validation: Split | None = None


def class_balanced_subset(
    split: Split, per_class: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """`per_class` un-augmented examples of every class, chosen by a seeded permutation.

    This is the scoring batch of SNIP (Lee et al. 2019) and GraSP (Wang et al. 2020), which
    sample ten examples per class. Examples are interleaved by class (c0, c1, ..., c0, c1, ...)
    so that any prefix is as balanced as it can be. A class with fewer examples is an error.
    """
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise PaiError(f"per_class {per_class!r} is not allowed; use a whole number >= 1")
    counts = torch.bincount(split.y, minlength=split.num_classes).cpu()
    short = [c for c in range(split.num_classes) if counts[c] < per_class]
    if short:
        raise PaiError(
            f"cannot take {per_class} examples per class: class(es) {short} have only "
            f"{[int(counts[c]) for c in short]} in this split"
        )
    order = _permutation(len(split), generator, split.device)
    by_class = order[torch.argsort(split.y[order], stable=True)]  # shuffled within each class
    starts = (torch.cumsum(counts, 0) - counts).to(split.device)
    picks = starts[:, None] + torch.arange(per_class, device=split.device)  # (classes, per_class)
    index = by_class[picks.T.reshape(-1)]
    return split.x[index], split.y[index]


def scoring_batches(
    split: Split, per_class: int, seed: int, batch_size: int | None = None
) -> list[tuple[Tensor, Tensor]]:
    """The scoring data of SNIP-like scorers: `class_balanced_subset` drawn with `seed`, as a
    list of batches of `batch_size` (one batch when None)."""
    x, y = class_balanced_subset(split, per_class, torch.Generator().manual_seed(seed))
    if batch_size is None:
        return [(x, y)]
    return list(zip(x.split(batch_size), y.split(batch_size), strict=True))


def training_subset(
    data: Dataset, per_class: int, seed: int = seeds.TRAINING_SUBSET_SEED
) -> Dataset:
    """`data` with its training split cut to a fixed class-balanced subset of `per_class` each.

    For reduced budgets: every method, IMP level and seed trains on the same examples
    (`class_balanced_subset` with a generator seeded by `seed`, 0 by default).
    """
    generator = torch.Generator().manual_seed(seed)
    x, y = class_balanced_subset(data.train, per_class, generator)
    train = Split(x, y, data.train.num_classes, data.train.pad_value)
    return Dataset(spec=data.spec, root=data.root, train=train, test=data.test)


def load_for_training(
    name: str,
    *,
    root: str | Path | None = None,
    device: torch.device | str | None = None,
    train_per_class: int | None = None,
) -> Dataset:
    """The dataset every trained run uses: loaded onto `device`, its training split cut to
    the fixed class-balanced subset of `train_per_class` examples per class when given."""
    data = load_dataset(name, root=root, device=device)
    if train_per_class is None:
        return data
    return training_subset(data, train_per_class)


# --- files on disk -------------------------------------------------------------------------


@dataclass(frozen=True)
class _DatasetFiles:
    """Where torchvision looks for a dataset's files and which ones it reads."""

    folder: Path
    files: tuple[str, ...]  # what torchvision reads with download=False
    archives: tuple[str, ...]  # compressed files torchvision unpacks without network (MNIST)


def _torchvision_class(spec: DatasetSpec) -> type:
    import torchvision.datasets

    return getattr(torchvision.datasets, spec.torchvision_name)


def _dataset_files(spec: DatasetSpec, root: Path) -> _DatasetFiles:
    """The files of torchvision's layout, taken from torchvision's own class attributes."""
    import torchvision.datasets

    cls = _torchvision_class(spec)
    if issubclass(cls, torchvision.datasets.CIFAR10):
        names = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        return _DatasetFiles(root / cls.base_folder, tuple(names), ())
    archives = tuple(name for name, _ in cls.resources)
    return _DatasetFiles(
        root / cls.__name__ / "raw", tuple(Path(name).stem for name in archives), archives
    )


def _read_only_ancestor(folder: Path) -> Path | None:
    """The nearest existing folder at or above `folder` if files cannot be created in it.

    A folder whose permission bits grant no write access to anyone counts as read-only even for
    root, who could write there anyway: shared data folders are marked read-only that way.
    """
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    writable = os.access(existing, os.W_OK) and bool(stat.S_IMODE(existing.stat().st_mode) & 0o222)
    return None if writable else existing


def _all_present(folder: Path, names: tuple[str, ...]) -> bool:
    return bool(names) and all((folder / name).is_file() for name in names)


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """Bound every socket operation while torchvision downloads, so a dead network fails."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _not_found(spec: DatasetSpec, root: Path, reason: str) -> DataNotFoundError:
    files = _dataset_files(spec, root)
    return DataNotFoundError(
        f"dataset {spec.name!r} not found in {files.folder} (looked for {', '.join(files.files)}) "
        f"and {reason}. Set --data-root or ${DATA_ROOT_ENV} to a folder holding torchvision's "
        f"layout for {spec.torchvision_name}, or connect to the internet so that torchvision "
        f"can download it into {root}"
    )


def _read_split(spec: DatasetSpec, root: Path, *, train: bool, download: bool) -> tuple:
    """torchvision's arrays (images, labels) for one split, downloading only if files are absent.

    `download=False` is tried first, so a dataset that is present never touches the network and
    nothing is written; a download is attempted only into a writable folder.
    """
    cls = _torchvision_class(spec)
    try:
        dataset = cls(root, train=train, download=False)
    except RuntimeError:  # torchvision's "Dataset not found or corrupted"
        if not download:
            raise _not_found(spec, root, "downloading is off (download=False)") from None
        read_only = _read_only_ancestor(_dataset_files(spec, root).folder)
        if read_only is not None:
            reason = f"{read_only} is read-only, so nothing is downloaded there"
            raise _not_found(spec, root, reason) from None
        log.info("downloading %s into %s", spec.name, root)
        try:
            with _socket_timeout(DOWNLOAD_SOCKET_TIMEOUT_S):
                dataset = cls(root, train=train, download=True)
        except (URLError, RuntimeError, OSError) as error:
            reason = " ".join(str(error).split())
            raise _not_found(spec, root, f"the download failed ({reason})") from None
    return dataset.data, dataset.targets


def _to_split(images: Tensor, labels: Tensor, spec: DatasetSpec, device: torch.device) -> Split:
    """Normalize uint8 (N, C, H, W) images on `device`: x = (pixel / 255 - mean) / std."""
    mean = torch.tensor(spec.mean, device=device).reshape(-1, 1, 1)
    std = torch.tensor(spec.std, device=device).reshape(-1, 1, 1)
    x = images.to(device).float().div_(255).sub_(mean).div_(std)
    pad_value = tuple(-m / s for m, s in zip(spec.mean, spec.std, strict=True))
    return Split(x, labels.to(device), spec.num_classes, pad_value)


def _as_nchw(images: object, spec: DatasetSpec) -> Tensor:
    """torchvision's images as uint8 (N, C, H, W); MNIST stores (N, H, W), CIFAR (N, H, W, C)."""
    tensor = torch.as_tensor(np.asarray(images))
    tensor = tensor.unsqueeze(1) if tensor.ndim == 3 else tensor.permute(0, 3, 1, 2)
    if tuple(tensor.shape[1:]) != spec.input_shape or tensor.dtype != torch.uint8:
        raise PaiError(
            f"dataset {spec.name!r} read with images {tuple(tensor.shape[1:])} {tensor.dtype}; "
            f"expected uint8 {spec.input_shape}"
        )
    return tensor.contiguous()


def load_dataset(
    name: str,
    root: str | Path | None = None,
    device: torch.device | str | None = None,
    *,
    validation: int = 0,
    download: bool = True,
) -> Dataset:
    """Load `mnist`, `fashion-mnist`, `cifar10` or `cifar100` whole onto `device`.

    Files are looked for in `root`, else `$PAI_DATA_ROOT`, else `~/.cache/pai/data`, in
    torchvision's layout; if absent and `download`, torchvision downloads them there. With
    `validation=n`, n training examples chosen by a permutation of a generator seeded with
    `pai.core.seeds.VALIDATION_SEED` (the same hold-out for every run) form `.validation` and leave `.train`;
    both keep the stored order. The device defaults to CUDA when available.
    """
    spec = dataset_spec(name)
    data_root = resolve_data_root(root)
    target = resolve_device(device)
    train_images, train_labels = _read_split(spec, data_root, train=True, download=download)
    test_images, test_labels = _read_split(spec, data_root, train=False, download=download)
    train_x = _as_nchw(train_images, spec)
    train_y = torch.as_tensor(train_labels, dtype=torch.int64)
    test_x = _as_nchw(test_images, spec)
    test_y = torch.as_tensor(test_labels, dtype=torch.int64)

    if isinstance(validation, bool) or not isinstance(validation, int) or validation < 0:
        raise PaiError(f"validation size {validation!r} is not allowed; use a whole number >= 0")
    if validation >= len(train_y):
        raise PaiError(
            f"validation size {validation} is not allowed for {spec.name}: it must be smaller "
            f"than the {len(train_y)} training examples"
        )
    held_out = None
    if validation:
        order = torch.randperm(
            len(train_y), generator=torch.Generator().manual_seed(seeds.VALIDATION_SEED)
        )
        held, kept = order[:validation].sort().values, order[validation:].sort().values
        held_out = _to_split(train_x[held], train_y[held], spec, target)
        train_x, train_y = train_x[kept], train_y[kept]

    log.info("loaded %s from %s onto %s", spec.name, data_root, target)
    return Dataset(
        spec=spec,
        root=data_root,
        train=_to_split(train_x, train_y, spec, target),
        test=_to_split(test_x, test_y, spec, target),
        validation=held_out,
    )


# --- status, for `pai datasets` ------------------------------------------------------------


@dataclass(frozen=True)
class DatasetStatus:
    """Whether a dataset's files are where pai looks for them; nothing is loaded or downloaded.

    `found` means every file torchvision reads is present in `folder` (checksums are verified by
    torchvision when loading), or, for MNIST and Fashion-MNIST, that the compressed `.gz` files
    are there and the folder is writable, so torchvision can unpack them without network.
    """

    spec: DatasetSpec
    folder: Path
    found: bool


def dataset_status(root: str | Path | None = None) -> list[DatasetStatus]:
    """The status of every supported dataset under `root` (resolved as in `load_dataset`)."""
    data_root = resolve_data_root(root)
    statuses = []
    for spec in DATASETS.values():
        files = _dataset_files(spec, data_root)
        found = _all_present(files.folder, files.files) or (
            _all_present(files.folder, files.archives) and _read_only_ancestor(files.folder) is None
        )
        statuses.append(DatasetStatus(spec, files.folder, found))
    return statuses
