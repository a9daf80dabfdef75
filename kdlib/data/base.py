"""What every dataset hands the trainer: splits that yield `Batch(x, y, index)`.

Two kinds of split share one interface:
- `TensorSplit`: the whole split as tensors (small sets). Batches are slices by a permutation,
  with no per-item DataLoader cost, and the tensors move to the GPU once when the device is CUDA.
- `LoaderSplit`: a torch Dataset behind a DataLoader with workers and pinned memory (large sets,
  random augmentation).
`index` is the sample's position in its split, so per-sample arrays line up across epochs.
A `LoaderSplit` with `draws` > 0 limits random augmentation to that many seeded views per sample
(the teacher-output cache's); its batches then carry `draw`, the view each sample got.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from kdlib.registry import Registry

DATASETS: Registry = Registry("dataset", package="kdlib.data")


@dataclass
class Batch:
    x: Tensor
    y: Tensor
    index: Tensor
    draw: Tensor | None = None  # which seeded augmentation view each sample is (LoaderSplit.draws)

    def to(
        self,
        device: torch.device | str,
        non_blocking: bool = False,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> Batch:
        x = self.x.to(device, non_blocking=non_blocking)
        if memory_format is not torch.contiguous_format and x.dim() == 4:
            x = x.contiguous(memory_format=memory_format)
        rest = (self.y, self.index, self.draw)
        return Batch(x, *(None if t is None else t.to(device, non_blocking=non_blocking) for t in rest))

    def __len__(self) -> int:
        return self.y.shape[0]


class TensorSplit:
    """A split held in memory as `x` [N, ...] and `y` [N] tensors."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
        self.x, self.y = x, y.long()
        self.index = torch.arange(len(y), device=y.device)

    def __len__(self) -> int:
        return self.y.shape[0]

    @property
    def targets(self) -> Tensor:
        return self.y

    def to(self, device: torch.device | str) -> TensorSplit:
        return TensorSplit(self.x.to(device), self.y.to(device))

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        part: tuple[int, int] = (0, 1),
    ) -> Iterator[Batch]:
        """Batches in a seeded order; `part=(r, n)` yields rows r, r+n, ... of each (one of n processes)."""
        rank, parts = part
        n = len(self)
        order = torch.randperm(n, generator=generator).to(self.y.device) if shuffle else self.index
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            rows = order[start : start + batch_size]
            if parts > 1:
                rows = rows[rank::parts]
            yield Batch(self.x[rows], self.y[rows], rows)


def draw_seed(index: int, draw: int) -> int:
    """The torch seed of augmentation view `draw` (< 256) of sample `index`: fixed, so every run sees the same views.

    Torch's CPU generator keeps 32 bits of a seed; within them a sample's views never share one.
    """
    return (index * 256 + draw) % 2**32


class _Indexed(Dataset):
    """Adds the dataset index to whatever `(x, y)` the wrapped dataset returns.

    A key `(index, draw)` asks for a seeded augmentation view: torch's generator (which torchvision's
    random transforms draw from) is seeded for that pair, and restored afterwards.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, int]):
        if isinstance(key, int):
            x, y = self.dataset[key]
            return x, y, key
        i, draw = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(draw_seed(i, draw))
            x, y = self.dataset[i]
        return x, y, i, draw


@dataclass
class LoaderSplit:
    """A split read through a DataLoader; `targets` are the labels of every sample, in order."""

    dataset: Dataset
    targets: Tensor
    num_workers: int = 2
    pin_memory: bool = True
    draws: int = 0  # > 0: each sample has this many seeded augmentation views; each pass picks one per sample
    _loaders: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.targets)

    def to(self, device: torch.device | str) -> LoaderSplit:
        self.pin_memory = self.pin_memory and torch.device(device).type == "cuda"
        return self

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        part: tuple[int, int] = (0, 1),
        draw: int | None = None,
    ) -> Iterator[Batch]:
        """As `TensorSplit.batches`, each process loading only its own rows of a batch; with `draws`
        (or a fixed `draw`), seeded augmentation views."""
        loader = DataLoader(
            _Indexed(self.dataset),
            batch_sampler=_PartOfEachBatch(
                len(self), batch_size, shuffle, generator, drop_last, part, self.draws, draw
            ),
            generator=generator,  # the workers' base seed is drawn from it first, as with shuffle=True
            collate_fn=_collate_or_none,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=False,
        )
        for collated in loader:
            if collated is None:  # a last batch smaller than the number of processes left this one nothing
                x = self.dataset[0][0]
                yield Batch(torch.empty((0, *x.shape)), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long))
                continue
            x, y, index, *draw_ids = collated
            yield Batch(x, torch.as_tensor(y).long(), index, *draw_ids)


class _PartOfEachBatch(Sampler):
    """Keys of each batch (dataset indices, or (index, view) pairs with seeded augmentation views), in
    the order RandomSampler draws them with the same generator; `part=(r, n)`: rows r, r+n, ... of each."""

    def __init__(self, size, batch_size, shuffle, generator, drop_last, part, draws=0, draw=None) -> None:
        self.size, self.batch_size, self.shuffle, self.generator = size, batch_size, shuffle, generator
        self.drop_last, (self.rank, self.parts), self.draws, self.draw = drop_last, part, draws, draw

    def __iter__(self):
        order = torch.randperm(self.size, generator=self.generator) if self.shuffle else torch.arange(self.size)
        keys = order.tolist()
        if self.draws or self.draw is not None:
            views = (torch.randint(self.draws, (self.size,), generator=self.generator) if self.draw is None
                     else torch.full((self.size,), self.draw))
            keys = list(zip(keys, views.tolist(), strict=True))
        stop = self.size - self.size % self.batch_size if self.drop_last else self.size
        for start in range(0, stop, self.batch_size):
            yield keys[start : start + self.batch_size][self.rank :: self.parts]

    def __len__(self) -> int:
        return self.size // self.batch_size if self.drop_last else math.ceil(self.size / self.batch_size)


def _collate_or_none(samples: list):
    return default_collate(samples) if samples else None


Split = TensorSplit | LoaderSplit


@dataclass
class DataBundle:
    """Train, validation and test splits of one dataset, and what models need to know of it."""

    train: Split
    val: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, ...]
    class_names: list[str] | None = None
    # Domain adaptation: the target domain's training samples with their labels masked (-1), so no
    # loss can read them; `test` then holds the target's labelled test samples, for evaluation only.
    target_train: Split | None = None

    def to(self, device: torch.device | str) -> DataBundle:
        target = None if self.target_train is None else self.target_train.to(device)
        return DataBundle(self.train.to(device), self.val.to(device), self.test.to(device), self.num_classes,
                          self.input_shape, self.class_names, target)


def first_samples(split: Split, count: int) -> Tensor:
    """The inputs of a split's first `count` samples (in dataset order)."""
    if hasattr(split, "x"):
        return split.x[:count]
    return next(split.batches(count)).x


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """A seeded train/val/test partition of `range(n)`; the same seed gives the same split."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    return order[n_test + n_val :], order[n_test : n_test + n_val], order[:n_test]


def tensor_bundle(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    class_names: list[str] | None = None,
) -> DataBundle:
    """Cut one pool of samples into seeded splits held in memory."""
    train, val, test = split_indices(len(y), val_fraction, test_fraction, seed)
    return DataBundle(
        TensorSplit(x[train], y[train]),
        TensorSplit(x[val], y[val]),
        TensorSplit(x[test], y[test]),
        num_classes,
        tuple(x.shape[1:]),
        class_names,
    )
