"""Image classification sets read by torchvision: CIFAR-10/100, MNIST, Fashion-MNIST, SVHN, USPS.

The official test split is the test split; validation is carved from the official train split with
the seeded `split_indices`. Without augmentation each split is decoded once into float32 tensors
(`TensorSplit`); with it, images go through a DataLoader so that each epoch sees new crops.
torchvision is imported inside functions, so that `import kdlib.data` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from kdlib.data.base import DATASETS, DataBundle, LoaderSplit, Split, TensorSplit, split_indices
from kdlib.data.params import SplitParams
from kdlib.spec import user_path


class ImageParams(SplitParams):
    """What every image set shares: augmentation, normalization and how splits are held."""

    augment: bool = Field(
        False,
        description="random crop with padding (and a horizontal flip where images allow it) on the train split only",
    )
    normalize: bool = Field(True, description="subtract the dataset's per-channel mean and divide by its std")
    in_memory: bool | None = Field(
        None,
        description="decode each split once into float32 tensors (fast, but "
        "CIFAR's train split takes ~600 MB); None: yes unless augment is on",
    )
    num_workers: int = Field(2, ge=0, description="DataLoader worker processes for splits read through a loader")

    @model_validator(mode="after")
    def _augment_needs_loader(self) -> ImageParams:
        if self.augment and self.in_memory:
            raise ValueError(
                "in_memory: random augmentation needs a loader; set in_memory: false (or null), or augment: false"
            )
        return self

    @property
    def held_in_memory(self) -> bool:
        return not self.augment if self.in_memory is None else self.in_memory


class TorchvisionParams(ImageParams):
    root: str = Field("data", description="folder that holds (or will hold) the dataset's files")
    download: bool = Field(False, description="fetch the files into root when they are missing")
    test_fraction: float = Field(0.0, ge=0, le=0, description="unused: the official test split is the test split")

    def sample_shape(self) -> tuple[int, ...]:
        return _SETS[self.name].shape

    def class_count(self) -> int:
        return _SETS[self.name].num_classes

    def path_problems(self, where: str) -> list[str]:
        """Without download, root must hold the set's files (their names checked, not their contents)."""
        s, root = _SETS[self.name], user_path(self.root)
        if self.download or all((root / name).exists() for name in s.found_by):
            return []
        return [f"{where}.root: no {s.files} under {self.root} (from {Path.cwd()}); set {where}.download: true "
                f"to fetch {s.cls}, or point {where}.root at the folder that holds them"]


class CIFAR10Params(TorchvisionParams):
    name: Literal["cifar10"] = "cifar10"


class CIFAR100Params(TorchvisionParams):
    name: Literal["cifar100"] = "cifar100"


class MNISTParams(TorchvisionParams):
    name: Literal["mnist"] = "mnist"


class FashionMNISTParams(TorchvisionParams):
    name: Literal["fashion_mnist"] = "fashion_mnist"


class SVHNParams(TorchvisionParams):
    name: Literal["svhn"] = "svhn"


class USPSParams(TorchvisionParams):
    name: Literal["usps"] = "usps"


@dataclass(frozen=True)
class _Set:
    cls: str  # the torchvision.datasets class
    files: str  # what root must hold, for error messages
    shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    layout: str  # how the class stores its uint8 images in `.data`
    flip: bool  # mirrored digits are not digits; mirrored clothes and objects still are
    found_by: tuple[str, ...] = ()  # what root holds once the files are there (checked before a run starts)


_SETS = {
    "cifar10": _Set(
        "CIFAR10",
        "cifar-10-batches-py/",
        (3, 32, 32),
        10,
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        "NHWC",
        True,
        ("cifar-10-batches-py",),
    ),
    "cifar100": _Set(
        "CIFAR100",
        "cifar-100-python/",
        (3, 32, 32),
        100,
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        "NHWC",
        True,
        ("cifar-100-python",),
    ),
    "mnist": _Set("MNIST", "MNIST/raw/*-ubyte", (1, 28, 28), 10, (0.1307,), (0.3081,), "NHW", False, ("MNIST",)),
    "fashion_mnist": _Set(
        "FashionMNIST", "FashionMNIST/raw/*-ubyte", (1, 28, 28), 10, (0.2860,), (0.3530,), "NHW", True,
        ("FashionMNIST",),
    ),
    "svhn": _Set(
        "SVHN",
        "train_32x32.mat and test_32x32.mat",
        (3, 32, 32),
        10,
        (0.4377, 0.4438, 0.4728),
        (0.1980, 0.2010, 0.1970),
        "NCHW",
        False,
        ("train_32x32.mat", "test_32x32.mat"),
    ),
    # 16x16 digits (7,291 train, 2,007 test); mean and std of its training images as used in
    # Richard456/Dann `datasets/usps.py`.
    "usps": _Set("USPS", "usps.bz2 and usps.t.bz2", (1, 16, 16), 10, (0.2473,), (0.2665,), "NHW", False,
                 ("usps.bz2", "usps.t.bz2")),
}


class Transformed(Dataset):
    """`dataset`'s `(image, label)` pairs with `transform` applied to the image.

    One dataset object then serves the augmented train and the plain validation subsets.
    """

    def __init__(self, dataset: Dataset, transform) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        x, y = self.dataset[i]
        return self.transform(x), y


def image_transforms(p: ImageParams, mean, std, size: int, flip: bool, resize: bool = False):
    """The (train, eval) transforms; train differs from eval only when `p.augment`."""
    from torchvision import transforms as T

    head = [T.Resize(size), T.CenterCrop(size)] if resize else []
    tail = [T.ToTensor()] + ([T.Normalize(mean, std)] if p.normalize else [])
    if not p.augment:
        return T.Compose(head + tail), T.Compose(head + tail)
    random = [T.RandomCrop(size, padding=size // 8)] + ([T.RandomHorizontalFlip()] if flip else [])
    return T.Compose(head + random + tail), T.Compose(head + tail)


def loader_split(dataset: Dataset, targets: Tensor, transform, num_workers: int, indices: Tensor | None = None):
    """`dataset` (or its `indices` subset) read through a DataLoader with `transform`."""
    ds: Dataset = Transformed(dataset, transform)
    if indices is not None:
        ds, targets = Subset(ds, indices.tolist()), targets[indices]
    return LoaderSplit(ds, targets, num_workers=num_workers)


def decode(dataset: Dataset, transform, num_workers: int) -> tuple[Tensor, Tensor]:
    """Every `(image, label)` of `dataset` through `transform`, stacked into tensors."""
    loader = DataLoader(Transformed(dataset, transform), batch_size=256, num_workers=num_workers)
    xs, ys = zip(*loader, strict=False)
    return torch.cat(xs).float(), torch.cat([torch.as_tensor(y) for y in ys]).long()


def _open(s: _Set, p: TorchvisionParams, train: bool):
    import torchvision.datasets as tvd

    split = {"split": "train" if train else "test"} if s.cls == "SVHN" else {"train": train}
    try:
        return getattr(tvd, s.cls)(p.root, download=p.download, **split)
    except (RuntimeError, FileNotFoundError) as e:  # "Dataset not found or corrupted"; USPS opens the file
        if p.download:
            raise
        raise FileNotFoundError(
            f"{p.name}: no usable {s.files} under data.root={p.root!r} (torchvision: {e}); "
            f"set data.download: true to fetch them, or point data.root at a folder with {s.files}"
        ) from e


def _labels(ds) -> Tensor:
    labels = ds.labels if hasattr(ds, "labels") else ds.targets  # SVHN names them `labels`
    return torch.as_tensor(np.asarray(labels), dtype=torch.long)


def _images(ds, s: _Set, p: TorchvisionParams) -> Tensor:
    """The uint8 `.data` array as float32 [N, C, H, W], exactly what ToTensor (+ Normalize) would give."""
    x = torch.as_tensor(np.asarray(ds.data))
    if s.layout == "NHWC":
        x = x.permute(0, 3, 1, 2)
    elif s.layout == "NHW":
        x = x.unsqueeze(1)
    x = x.contiguous().float().div_(255)
    if p.normalize:
        x.sub_(torch.tensor(s.mean).view(-1, 1, 1)).div_(torch.tensor(s.std).view(-1, 1, 1))
    return x


def load_torchvision(p: TorchvisionParams) -> DataBundle:
    """Train and validation from the official train split, test from the official test split."""
    s = _SETS[p.name]
    pool, test = _open(s, p, train=True), _open(s, p, train=False)
    y_pool, y_test = _labels(pool), _labels(test)
    train_idx, val_idx, _ = split_indices(len(y_pool), p.val_fraction, 0.0, p.split_seed)
    splits: tuple[Split, Split, Split]
    if p.held_in_memory:
        x_pool = _images(pool, s, p)
        splits = (
            TensorSplit(x_pool[train_idx], y_pool[train_idx]),
            TensorSplit(x_pool[val_idx], y_pool[val_idx]),
            TensorSplit(_images(test, s, p), y_test),
        )
    else:
        train_tf, eval_tf = image_transforms(p, s.mean, s.std, s.shape[-1], s.flip)
        splits = (
            loader_split(pool, y_pool, train_tf, p.num_workers, train_idx),
            loader_split(pool, y_pool, eval_tf, p.num_workers, val_idx),
            loader_split(test, y_test, eval_tf, p.num_workers),
        )
    names = list(getattr(pool, "classes", None) or [str(i) for i in range(s.num_classes)])
    return DataBundle(*splits, s.num_classes, s.shape, names)


for _params in (CIFAR10Params, CIFAR100Params, MNISTParams, FashionMNISTParams, SVHNParams, USPSParams):
    _name = _params.model_fields["name"].default
    DATASETS.register(_name)(type(_name, (), {"Params": _params, "load": staticmethod(load_torchvision)}))
