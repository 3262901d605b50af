"""Data loading: real MNIST/Fashion-MNIST, generated CIFAR files, batches, hold-outs, errors."""

from __future__ import annotations

import hashlib
import pickle
import shutil
import socket
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision.datasets

from pai import cli
from pai.data.loading import (
    Split,
    class_balanced_subset,
    dataset_status,
    default_data_root,
    load_dataset,
    random_crop_flip,
    resolve_data_root,
    training_subset,
)
from pai.data.specs import dataset_spec
from pai.core.errors import DataNotFoundError, PaiError


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def tree_snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path below root with its size and modification time."""
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in [root, *root.rglob("*")]
    }


# --- real data ------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["mnist", "fashion-mnist"])
def real(request: pytest.FixtureRequest, data_root: Path):
    return load_dataset(request.param, data_root)


# First labels of torchvision's train and test splits, as published with the files.
FIRST_LABELS = {"mnist": ([5, 0, 4], [7, 2, 1]), "fashion-mnist": ([9, 0, 0], [9, 2, 1])}


def test_real_data_sizes_shapes_labels(real) -> None:
    assert (len(real.train), len(real.test)) == (60000, 10000)
    assert real.validation is None
    for split in (real.train, real.test):
        assert split.x.shape[1:] == (1, 28, 28) and split.x.dtype == torch.float32
        assert split.y.dtype == torch.int64
        assert torch.equal(torch.unique(split.y).cpu(), torch.arange(10))
    first_train, first_test = FIRST_LABELS[real.spec.name]
    assert real.train.y[:3].tolist() == first_train
    assert real.test.y[:3].tolist() == first_test


def test_real_data_normalization(real) -> None:
    """x = (pixel / 255 - mean) / std, with the spec's mean and std measured on the train split."""
    spec = real.spec
    raw = real.train.x * spec.std[0] + spec.mean[0]
    assert raw.min().item() == pytest.approx(0.0, abs=1e-6)
    assert raw.max().item() == pytest.approx(1.0, abs=1e-6)
    assert real.train.x.mean().item() == pytest.approx(0.0, abs=2e-3)
    assert real.train.x.std().item() == pytest.approx(1.0, abs=2e-3)
    assert real.train.pad_value == pytest.approx((-spec.mean[0] / spec.std[0],))


def test_loading_present_data_touches_neither_disk_nor_network(data_root, no_network) -> None:
    before = tree_snapshot(data_root)
    load_dataset("mnist", data_root, "cpu")
    with pytest.raises(DataNotFoundError):
        load_dataset("cifar10", data_root, "cpu", download=True)
    dataset_status(data_root)
    assert tree_snapshot(data_root) == before


def test_cifar10_missing_at_read_only_root_is_a_clear_error(data_root) -> None:
    with pytest.raises(DataNotFoundError) as caught:
        load_dataset("cifar10", data_root, "cpu", download=True)
    message = str(caught.value)
    assert isinstance(caught.value, PaiError)
    assert str(data_root / "cifar-10-batches-py") in message
    assert "read-only" in message and "PAI_DATA_ROOT" in message and "\n" not in message


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch) -> None:
    def unreachable(*args: object, **kwargs: object) -> None:
        raise URLError("Name or service not known")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", unreachable)
    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", unreachable)
    for name, folder in [("cifar100", "cifar-100-python"), ("mnist", "MNIST/raw")]:
        with pytest.raises(DataNotFoundError) as caught:
            load_dataset(name, tmp_path, "cpu")
        message = str(caught.value)
        assert str(tmp_path / folder) in message and "download failed" in message
        assert "Name or service not known" in message and "\n" not in message


def test_download_off_is_a_clear_error(tmp_path, no_network) -> None:
    with pytest.raises(DataNotFoundError, match=r"download=False"):
        load_dataset("fashion-mnist", tmp_path, "cpu", download=False)


def test_compressed_mnist_is_unpacked_without_network(data_root, tmp_path, no_network) -> None:
    """The layout of the README's GPU recipe: only the .gz files, in a writable folder."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for archive in (data_root / "MNIST" / "raw").glob("*.gz"):
        shutil.copy(archive, raw)
    raw.chmod(0o555)  # read-only: the archives cannot be unpacked here
    try:
        assert not dataset_status(tmp_path)[0].found
        with pytest.raises(DataNotFoundError, match="read-only"):
            load_dataset("mnist", tmp_path, "cpu")
    finally:
        raw.chmod(0o755)
    assert dataset_status(tmp_path)[0].found
    data = load_dataset("mnist", tmp_path, "cpu")
    assert (len(data.train), len(data.test)) == (60000, 10000)


def test_unknown_dataset_lists_the_names() -> None:
    with pytest.raises(PaiError, match="cifar10, cifar100, fashion-mnist, mnist"):
        load_dataset("imagenet")


def test_data_root_resolution(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PAI_DATA_ROOT", str(tmp_path))
    assert default_data_root() == tmp_path
    assert resolve_data_root(None) == tmp_path
    assert resolve_data_root(tmp_path / "given") == tmp_path / "given"
    monkeypatch.setenv("PAI_DATA_ROOT", "")
    assert default_data_root() == Path.home() / ".cache" / "pai" / "data"
    monkeypatch.delenv("PAI_DATA_ROOT")
    assert resolve_data_root(None) == Path.home() / ".cache" / "pai" / "data"


def test_cli_datasets_table(data_root, capsys) -> None:
    assert cli.main(["datasets", "--data-root", str(data_root)]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert rows["mnist"][1:6] == ["1x28x28", "10", "60000", "10000", "yes"]
    assert rows["fashion-mnist"][5] == "yes"
    assert rows["cifar10"][1:6] == ["3x32x32", "10", "50000", "10000", "no"]
    assert rows["cifar10"][6] == str(data_root / "cifar-10-batches-py")
    assert rows["cifar100"][5] == "no"


# --- generated CIFAR files -------------------------------------------------------------------


def write_pickle(path: Path, content: dict) -> str:
    """Pickle like the real CIFAR files (whose keys unpickle as str with encoding='latin1')."""
    path.write_bytes(pickle.dumps(content))
    return hashlib.md5(path.read_bytes()).hexdigest()


def fake_cifar(root: Path, monkeypatch, name: str, train_size: int, test_size: int) -> dict:
    """CIFAR files in torchvision's batch format, with torchvision's md5 table set to theirs.

    Every pixel is in 1..255 (so a raw 0 can only come from crop padding) and every image is
    distinct. Returns the images (N, 3072) and labels written for each split.
    """
    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    num_classes = dataset_spec(name).num_classes
    label_key = "labels" if name == "cifar10" else "fine_labels"
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for split, size in (("train", train_size), ("test", test_size)):
        images = rng.integers(1, 256, size=(size, 3072), dtype=np.uint8)
        labels = (np.arange(size) % num_classes).tolist()
        written[split] = (images, labels)
        file_names = [entry[0] for entry in (cls.train_list if split == "train" else cls.test_list)]
        pieces = np.array_split(np.arange(size), len(file_names))
        table = []
        for file_name, piece in zip(file_names, pieces, strict=True):
            content = {"data": images[piece], label_key: [labels[i] for i in piece]}
            if name == "cifar100":
                content["coarse_labels"] = [labels[i] // 5 for i in piece]
            table.append([file_name, write_pickle(folder / file_name, content)])
        monkeypatch.setattr(cls, f"{split}_list", table)
    meta_key = cls.meta["key"]
    meta_md5 = write_pickle(
        folder / cls.meta["filename"], {meta_key: list(map(str, range(num_classes)))}
    )
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": meta_md5})
    return written


@pytest.fixture
def cifar10(tmp_path, monkeypatch, no_network):
    written = fake_cifar(tmp_path, monkeypatch, "cifar10", train_size=100, test_size=30)
    return tmp_path, written


@pytest.mark.parametrize("name, train_size", [("cifar10", 100), ("cifar100", 200)])
def test_generated_cifar_loads(tmp_path, monkeypatch, no_network, name, train_size) -> None:
    written = fake_cifar(tmp_path, monkeypatch, name, train_size=train_size, test_size=30)
    assert {s.spec.name: s.found for s in dataset_status(tmp_path)}[name]
    data = load_dataset(name, tmp_path, "cpu", download=False)
    spec = data.spec
    for split, (images, labels) in zip((data.train, data.test), written.values(), strict=True):
        assert split.x.shape == (len(labels), 3, 32, 32)
        assert split.y.tolist() == labels
        # a CIFAR row is 1024 red, then 1024 green, then 1024 blue values, each row-major
        raw = torch.from_numpy(images).float().reshape(-1, 3, 32, 32) / 255
        mean, std = torch.tensor(spec.mean), torch.tensor(spec.std)
        expected = (raw - mean.reshape(3, 1, 1)) / std.reshape(3, 1, 1)
        torch.testing.assert_close(split.x, expected)


def test_validation_hold_out_is_disjoint_and_fixed(cifar10) -> None:
    root, written = cifar10
    images = written["train"][0]
    first = load_dataset("cifar10", root, "cpu", validation=20)
    again = load_dataset("cifar10", root, "cpu", validation=20)
    assert (len(first.train), len(first.validation)) == (80, 20)
    assert torch.equal(first.validation.x, again.validation.x)
    assert torch.equal(first.train.y, again.train.y)

    def row_indices(split: Split) -> list[int]:
        """Which written rows a split holds (every generated image is distinct)."""
        normalized = load_dataset("cifar10", root, "cpu").train.x.reshape(len(images), -1)
        matches = (split.x.reshape(len(split), 1, -1) == normalized[None]).all(-1)
        assert (matches.sum(1) == 1).all()
        return matches.float().argmax(1).tolist()

    held, kept = row_indices(first.validation), row_indices(first.train)
    assert sorted(held + kept) == list(range(100))
    assert kept == sorted(kept) and held == sorted(held)  # both keep the stored order
    with pytest.raises(PaiError, match="validation size 100"):
        load_dataset("cifar10", root, "cpu", validation=100)
    with pytest.raises(PaiError, match="validation size -1"):
        load_dataset("cifar10", root, "cpu", validation=-1)


def test_cifar_augmentation_on_batches(cifar10) -> None:
    root, _ = cifar10
    data = load_dataset("cifar10", root, "cpu")
    train = data.train

    def epoch(seed: int, augment: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(train.batches(32, generator(seed), augment=augment))

    augmented, plain = epoch(0, True), epoch(0, False)
    assert [x.shape for x, _ in augmented] == [(32, 3, 32, 32)] * 3 + [(4, 3, 32, 32)]
    assert all(torch.equal(a[1], p[1]) for a, p in zip(augmented, plain, strict=True))
    assert not torch.equal(augmented[0][0], plain[0][0])
    assert all(torch.equal(a[0], b[0]) for a, b in zip(augmented, epoch(0, True), strict=True))
    assert not torch.equal(augmented[0][0], epoch(1, True)[0][0])
    # padding is a raw black pixel; generated pixels are >= 1/255, so raw 0 is padding only
    mean = torch.tensor(data.spec.mean).reshape(3, 1, 1)
    std = torch.tensor(data.spec.std).reshape(3, 1, 1)
    raw = torch.cat([x for x, _ in augmented]) * std + mean
    assert raw.min().item() > -1e-5 and (raw.abs() < 1e-5).any()


def test_random_crop_flip_is_a_crop_of_the_padded_image_then_a_flip() -> None:
    """Each output is exactly one of the 9 x 9 offsets x 2 flips; every offset occurs."""
    n, padding, pad_value = 1000, 4, (-1.0, -2.0, -3.0)
    x = torch.rand(n, 3, 8, 8, generator=generator(0))
    out = random_crop_flip(x, generator(1), padding=padding, pad_value=pad_value)
    assert out.shape == x.shape
    padded = torch.tensor(pad_value).reshape(1, 3, 1, 1).repeat(n, 1, 16, 16)
    padded[:, :, 4:12, 4:12] = x
    crops = padded.unfold(2, 8, 1).unfold(3, 8, 1)  # (n, 3, dy, dx, 8, 8)
    matches = (
        torch.stack(
            [
                (crops == image[:, :, None, None]).all(-1).all(-1).all(1)
                for image in (out, out.flip(-1))
            ],
            dim=-1,
        )
        .reshape(n, -1)
        .T
    )  # (dy, dx, flip) flattened, n
    assert (matches.sum(0) == 1).all()
    chosen = matches.float().argmax(0)
    assert len(set((chosen // 2).tolist())) == 81
    assert 0.45 < (chosen % 2).float().mean().item() < 0.55
    assert torch.equal(out, random_crop_flip(x, generator(1), padding=padding, pad_value=pad_value))


# --- batches and subsets ---------------------------------------------------------------------


def indexed_split(n: int, num_classes: int = 10, device: str = "cpu") -> Split:
    """A split whose image i is filled with the value i and whose label is i mod classes."""
    index = torch.arange(n, device=device)
    x = index.float().reshape(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return Split(x, index % num_classes, num_classes, (0.0,))


def test_batches_are_a_seeded_permutation() -> None:
    split = indexed_split(103)
    batches = list(split.batches(10, generator(0)))
    assert [len(y) for _, y in batches] == [10] * 10 + [3] == [len(x) for x, _ in batches]
    assert split.num_batches(10) == 11 and split.num_batches(10, drop_last=True) == 10
    order = torch.cat([x[:, 0, 0, 0] for x, _ in batches]).long()
    assert sorted(order.tolist()) == list(range(103))
    assert torch.equal(torch.cat([y for _, y in batches]), order % 10)  # x and y stay paired
    assert not torch.equal(order, torch.arange(103))
    same = torch.cat([x[:, 0, 0, 0] for x, _ in split.batches(10, generator(0))]).long()
    other = torch.cat([x[:, 0, 0, 0] for x, _ in split.batches(10, generator(1))]).long()
    assert torch.equal(order, same) and not torch.equal(order, other)
    dropped = list(split.batches(10, generator(0), drop_last=True))
    assert len(dropped) == 10 and torch.equal(
        torch.cat([x for x, _ in dropped]), split.x[order[:100]]
    )
    unshuffled = torch.cat([y for _, y in split.batches(10, generator(0), shuffle=False)])
    assert torch.equal(unshuffled, split.y)
    assert torch.equal(torch.cat([x for x, _ in split.eval_batches(7)]), split.x)
    with pytest.raises(PaiError, match="batch size 0"):
        next(split.batches(0, generator(0)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_generator_gives_the_same_order_on_cuda() -> None:
    on_cpu = [y for _, y in indexed_split(1000).batches(64, generator(3), augment=True)]
    on_cuda = [
        y for _, y in indexed_split(1000, device="cuda").batches(64, generator(3), augment=True)
    ]
    assert all(torch.equal(a, b.cpu()) for a, b in zip(on_cpu, on_cuda, strict=True))
    cuda_generator = torch.Generator(device="cuda").manual_seed(3)
    batch = next(indexed_split(1000, device="cuda").batches(64, cuda_generator, augment=True))
    assert batch[0].device.type == "cuda"


def test_class_balanced_subset() -> None:
    split = indexed_split(1000)
    x, y = class_balanced_subset(split, 10, generator(0))
    assert torch.equal(y, torch.arange(10).repeat(10))  # interleaved by class
    index = x[:, 0, 0, 0].long()
    assert len(set(index.tolist())) == 100 and torch.equal(split.y[index], y)
    again, _ = class_balanced_subset(split, 10, generator(0))
    other, _ = class_balanced_subset(split, 10, generator(1))
    assert torch.equal(x, again) and not torch.equal(x, other)
    with pytest.raises(PaiError, match=r"class\(es\) \[3, 4, 5, 6, 7, 8, 9\] have only \[100, "):
        class_balanced_subset(indexed_split(1003), 101, generator(0))


def test_class_balanced_subset_on_real_data(real) -> None:
    x, y = class_balanced_subset(real.train, 10, generator(0))
    assert x.shape == (100, 1, 28, 28)
    assert torch.equal(torch.bincount(y.cpu(), minlength=10), torch.full((10,), 10))


def test_training_subset_cuts_only_the_training_split(data_root):
    data = load_dataset("mnist", root=data_root, device="cpu")
    subset = training_subset(data, 7)
    assert len(subset.train) == 70 and len(subset.test) == 10000
    assert torch.equal(torch.bincount(subset.train.y), torch.full((10,), 7))
    again = training_subset(data, 7)
    assert torch.equal(subset.train.x, again.train.x)
