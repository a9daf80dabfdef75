"""torchvision-backed sets, read from tiny files in each set's real on-disk format (no network)."""

from __future__ import annotations

import os
import pickle
import struct

import numpy as np
import pytest
import scipy.io
import torch
import torchvision.datasets as tvd
from pydantic import ValidationError

from kdlib.data import DATASETS, LoaderSplit, TensorSplit

N_TRAIN, N_TEST = 20, 10  # official train / test samples in the generated files
NAMES = ["cifar10", "cifar100", "mnist", "fashion_mnist", "svhn"]
CLASSES = {
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
    "mnist": "MNIST",
    "fashion_mnist": "FashionMNIST",
    "svhn": "SVHN",
}


def _pickle(path, obj):
    path.write_bytes(pickle.dumps(obj))


def _cifar(root, name, rng):
    k = 10 if name == "cifar10" else 100

    def batch(n):
        return rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, k, n).tolist()

    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for i in range(1, 6):  # N_TRAIN spread over the five train batches
            x, y = batch(N_TRAIN // 5)
            _pickle(folder / f"data_batch_{i}", {"data": x, "labels": y})
        x, y = batch(N_TEST)
        _pickle(folder / "test_batch", {"data": x, "labels": y})
        _pickle(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(k)]})
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        _pickle(folder / "train", dict(zip(("data", "fine_labels"), batch(N_TRAIN), strict=False)))
        x, y = batch(N_TEST)
        _pickle(folder / "test", {"data": x, "fine_labels": y})
        _pickle(folder / "meta", {"fine_label_names": [f"c{i}" for i in range(k)]})
    return y


def _idx(path, a):
    """An idx-ubyte file: magic (uint8, ndim), big-endian dims, then the bytes."""
    path.write_bytes(struct.pack(">I", 0x0800 + a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes())


def _mnist(root, cls, rng):
    raw = root / cls / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        y = rng.integers(0, 10, n).astype(np.uint8)
        _idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", y)
    return y.tolist()


def _svhn(root, rng):
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        y = rng.integers(1, 11, n).astype(np.uint8)  # SVHN writes digit 0 as 10
        y[0] = 10
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": x, "y": y[:, None]})
    return [int(v) % 10 for v in y]


def write_files(root, name) -> list[int]:
    """Writes `name`'s files under `root`; returns the test labels as the loader must report them."""
    rng = np.random.default_rng(0)
    if name.startswith("cifar"):
        return _cifar(root, name, rng)
    if name == "svhn":
        return _svhn(root, rng)
    return _mnist(root, CLASSES[name], rng)


@pytest.fixture(autouse=True)
def _no_md5(monkeypatch):
    """The generated files cannot match the published md5 sums; check only that they exist."""
    exists = lambda fpath, md5=None: os.path.isfile(fpath)  # noqa: E731
    monkeypatch.setattr(tvd.cifar, "check_integrity", exists)
    monkeypatch.setattr(tvd.svhn, "check_integrity", exists)


def load(name, root, **kw):
    entry = DATASETS.get(name)
    return entry.load(entry.Params(root=str(root), val_fraction=0.2, num_workers=0, **kw)).to("cpu")


def check_split(split, bundle, batch_size=8):
    """Every batch has the documented shapes and ranges; indices cover the split once, in order."""
    ys, index = [], []
    for b in split.batches(batch_size):
        assert b.x.shape == (len(b), *bundle.input_shape) and b.x.dtype == torch.float32
        assert b.y.dtype == torch.long and 0 <= b.y.min() and b.y.max() < bundle.num_classes
        ys.append(b.y)
        index.append(b.index)
    assert torch.equal(torch.cat(index), torch.arange(len(split)))
    assert torch.equal(torch.cat(ys), split.targets)  # `targets` are the labels in order


@pytest.mark.parametrize("name", NAMES)
def test_in_memory_splits(name, tmp_path):
    test_labels = write_files(tmp_path, name)
    bundle = load(name, tmp_path)
    assert all(isinstance(s, TensorSplit) for s in (bundle.train, bundle.val, bundle.test))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (N_TRAIN - 4, 4, N_TEST)
    for split in (bundle.train, bundle.val, bundle.test):
        check_split(split, bundle)
    assert bundle.test.targets.tolist() == test_labels
    assert len(bundle.class_names) == bundle.num_classes
    # normalized: roughly zero-mean, unit-scale pixels of uniform noise
    assert bundle.train.x.abs().max() < 4 and bundle.train.x.min() < 0


@pytest.mark.parametrize("name", NAMES)
def test_augment_reads_through_a_loader(name, tmp_path):
    write_files(tmp_path, name)
    plain = load(name, tmp_path)
    bundle = load(name, tmp_path, augment=True)
    assert all(isinstance(s, LoaderSplit) for s in (bundle.train, bundle.val, bundle.test))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (N_TRAIN - 4, 4, N_TEST)
    for split in (bundle.train, bundle.val, bundle.test):
        check_split(split, bundle)
    # same samples in the same splits; val and test (not augmented) decode to the in-memory values
    assert torch.equal(bundle.train.targets, plain.train.targets)
    for s, t in ((bundle.val, plain.val), (bundle.test, plain.test)):
        torch.testing.assert_close(next(s.batches(N_TEST)).x, t.x, atol=1e-5, rtol=0)


def test_loader_without_augment_matches_memory(tmp_path):
    write_files(tmp_path, "cifar10")
    plain, loaded = (
        load("cifar10", tmp_path, normalize=False),
        load("cifar10", tmp_path, normalize=False, in_memory=False),
    )
    assert isinstance(loaded.train, LoaderSplit)
    torch.testing.assert_close(next(loaded.train.batches(N_TRAIN)).x, plain.train.x)
    assert 0 <= plain.train.x.min() and plain.train.x.max() <= 1


@pytest.mark.parametrize("name", NAMES)
def test_missing_files_name_the_fields(name, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data\.root") as e:
        load(name, tmp_path / "nowhere")
    assert "data.download: true" in str(e.value)


@pytest.mark.parametrize("name", NAMES)
def test_download_is_passed_to_torchvision(name, tmp_path, monkeypatch):
    write_files(tmp_path, name)
    real, calls = getattr(tvd, CLASSES[name]), []

    def record(self, *args, **kwargs):
        calls.append(kwargs)
        real.__init__(self, *args, **{**kwargs, "download": False})  # the files are already there

    # same class name: MNIST finds its folder by it
    monkeypatch.setattr(tvd, CLASSES[name], type(real.__name__, (real,), {"__init__": record}))
    load(name, tmp_path, download=True)
    assert len(calls) == 2 and all(c["download"] is True for c in calls)


def test_split_is_seeded(tmp_path):
    write_files(tmp_path, "mnist")
    a, b, c = (load("mnist", tmp_path, split_seed=s) for s in (0, 0, 1))
    assert torch.equal(a.val.x, b.val.x) and not torch.equal(a.val.x, c.val.x)


def test_params():
    p = DATASETS.get("cifar10").Params()
    assert (p.root, p.download, p.augment, p.normalize, p.num_workers, p.held_in_memory) == (
        "data",
        False,
        False,
        True,
        2,
        True,
    )
    assert not DATASETS.get("cifar10").Params(augment=True).held_in_memory
    with pytest.raises(ValidationError, match="in_memory"):
        DATASETS.get("svhn").Params(augment=True, in_memory=True)
    with pytest.raises(ValidationError, match="test_fraction"):
        DATASETS.get("mnist").Params(test_fraction=0.2)
