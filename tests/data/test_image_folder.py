"""image_folder: class subfolders of PNG files written by the test."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from kdlib.data import DATASETS, LoaderSplit, TensorSplit

CLASSES = ["cat", "dog", "owl"]
Params = DATASETS.get("image_folder").Params


def write_folder(root, per_class):
    """`per_class` PNGs per class, of mixed sizes and modes (grayscale ones must come out RGB)."""
    rng = np.random.default_rng(len(str(root)))
    for c in CLASSES:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            h, w = 24 + 4 * i, 40 - 2 * i
            mode, shape = ("L", (h, w)) if i % 2 else ("RGB", (h, w, 3))
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / c / f"{i}.png")
    return root


def load(**kw):
    p = Params(image_size=16, val_fraction=0.2, test_fraction=0.2, num_workers=0, **kw)
    return DATASETS.get("image_folder").load(p).to("cpu")


def check_split(split, bundle):
    ys, index = [], []
    for b in split.batches(4):
        assert b.x.shape == (len(b), 3, 16, 16) and b.x.dtype == torch.float32
        assert 0 <= b.y.min() and b.y.max() < bundle.num_classes
        ys.append(b.y)
        index.append(b.index)
    assert torch.equal(torch.cat(index), torch.arange(len(split)))
    assert torch.equal(torch.cat(ys), split.targets)


def test_in_memory_carves_all_splits_from_root(tmp_path):
    bundle = load(root=str(write_folder(tmp_path / "imgs", 5)))
    assert all(isinstance(s, TensorSplit) for s in (bundle.train, bundle.val, bundle.test))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (9, 3, 3)
    assert (bundle.num_classes, bundle.input_shape, bundle.class_names) == (3, (3, 16, 16), CLASSES)
    for split in (bundle.train, bundle.val, bundle.test):
        check_split(split, bundle)


def test_test_root_is_the_test_split(tmp_path):
    root, test_root = write_folder(tmp_path / "train", 5), write_folder(tmp_path / "test", 2)
    bundle = load(root=str(root), test_root=str(test_root))
    assert (len(bundle.train) + len(bundle.val), len(bundle.test)) == (15, 6)
    assert bundle.test.targets.tolist() == [0, 0, 1, 1, 2, 2]
    check_split(bundle.test, bundle)


def test_augment_reads_through_a_loader(tmp_path):
    root = str(write_folder(tmp_path / "imgs", 5))
    plain, bundle = load(root=root), load(root=root, augment=True)
    assert all(isinstance(s, LoaderSplit) for s in (bundle.train, bundle.val, bundle.test))
    for split in (bundle.train, bundle.val, bundle.test):
        check_split(split, bundle)
    # same seeded partition; the plain splits decode to the in-memory values
    assert torch.equal(bundle.train.targets, plain.train.targets)
    torch.testing.assert_close(next(bundle.test.batches(10)).x, plain.test.x)


def test_missing_or_empty_root_names_the_field(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data\.root"):
        load(root=str(tmp_path / "nowhere"))
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "a.png")  # images but no class folders
    with pytest.raises(FileNotFoundError, match=r"data\.root"):
        load(root=str(tmp_path / "flat"))


def test_test_root_needs_the_same_classes(tmp_path):
    root, other = write_folder(tmp_path / "train", 2), tmp_path / "test"
    (other / "cat").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(other / "cat" / "a.png")
    with pytest.raises(ValueError, match=r"data\.test_root"):
        load(root=str(root), test_root=str(other))
