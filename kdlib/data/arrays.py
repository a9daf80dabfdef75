"""Your own arrays, without code: `data: {name: arrays, path: data.npz}`, and how any arrays become splits.

The file is one of
- `.npz`: arrays `x` [N, ...] and `y` [N], optionally `x_test` and `y_test` (then the official test
  split, and `test_fraction` is unused) and `class_names`;
- `.csv`: one sample a row, the last column its label, a header row allowed;
- `.parquet`: the same layout as a csv file (read with pandas).
`path` starts from the config file's folder (or is absolute). Labels may be integers 0..K-1 or text
(each distinct text a class, in sorted order). Floating inputs become float32.

`array_bundle`, `mapping_bundle` and `dataset_bundle` are also how a function registered with
`kdlib.register_dataset` becomes a `DataBundle` (`as_bundle`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, ValidationInfo, field_validator
from torch import Tensor
from torch.utils.data import Dataset, Subset, TensorDataset

from kdlib.data.base import DATASETS, DataBundle, LoaderSplit, TensorSplit, split_indices, tensor_bundle
from kdlib.data.params import SplitParams
from kdlib.spec import context_folder, local_path

SUFFIXES = (".npz", ".csv", ".parquet")


class Params(SplitParams):
    name: Literal["arrays"] = "arrays"
    path: str = Field(
        "data.npz",
        description="a .npz file (arrays x, y; optional x_test, y_test, class_names), or a .csv or .parquet "
        "file (one sample a row, the last column the label); relative to the config file's folder",
    )

    @field_validator("path")
    @classmethod
    def _absolute(cls, path: str, info: ValidationInfo) -> str:
        if Path(path).suffix not in SUFFIXES:
            raise ValueError(f"{path} is not a {', '.join(SUFFIXES)} file")
        return local_path(path, context_folder(info))

    def path_problems(self, where: str) -> list[str]:
        """The file is not there (checked before a run starts)."""
        if Path(self.path).is_file():
            return []
        return [f"{where}.path: no file {self.path}; point {where}.path at a {', '.join(SUFFIXES)} file "
                "(relative to the config file's folder)"]


@DATASETS.register("arrays")
class Arrays:
    Params = Params

    @staticmethod
    def load(p: Params) -> DataBundle:
        return mapping_bundle(read_arrays(p.path), p, f"data.path ({p.path})")


def read_arrays(path: str | Path) -> dict[str, Any]:
    """The arrays of a .npz, .csv or .parquet file, by the names a .npz file uses."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ValueError(f"data.path: {path} is not a {', '.join(SUFFIXES)} file")
    if not path.is_file():
        raise FileNotFoundError(f"data.path: no such file {path}")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as arrays:
            return {key: arrays[key] for key in arrays.files}
    from pandas.api.types import is_numeric_dtype

    frame = _read_table(path)
    if frame.shape[1] < 2:
        raise ValueError(
            f"data.path: {path} has {frame.shape[1]} column; it needs features and a last column of labels"
        )
    features = frame.iloc[:, :-1]
    text = [str(c) for c in features.columns if not is_numeric_dtype(features[c])]
    if text:
        raise ValueError(f"data.path: {path}: feature columns must hold numbers; {', '.join(text)} do not")
    return {"x": features.to_numpy(), "y": frame.iloc[:, -1].to_numpy()}


def _read_table(path: Path):
    import pandas as pd

    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    first = pd.read_csv(path, header=None, nrows=1)
    header = pd.to_numeric(first.iloc[0, :-1], errors="coerce").isna().any()  # words where numbers would be
    return pd.read_csv(path, header=0 if header else None)


def mapping_bundle(arrays: Mapping[str, Any], p: SplitParams, where: str) -> DataBundle:
    """Splits from arrays named as in a .npz file: x, y, and optionally x_test, y_test, class_names."""
    missing = [key for key in ("x", "y") if key not in arrays]
    if missing:
        raise ValueError(f"{where}: has no array {missing[0]!r} (it holds: {', '.join(arrays) or 'nothing'})")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise ValueError(f"{where}: x_test and y_test go together; it holds only one of them")
    names = arrays.get("class_names")
    return array_bundle(
        arrays["x"],
        arrays["y"],
        p,
        arrays.get("x_test"),
        arrays.get("y_test"),
        None if names is None else [str(n) for n in np.asarray(names).tolist()],
        where,
    )


def array_bundle(
    x, y, p: SplitParams, x_test=None, y_test=None, class_names: list[str] | None = None, where: str = "data"
) -> DataBundle:
    """Splits of arrays (numpy, torch, lists): seeded train/val/test from `p`; x_test, y_test, when given, are the test split."""
    x, x_test = _features(x, f"{where}: x"), None if x_test is None else _features(x_test, f"{where}: x_test")
    (y, *rest), names = class_labels([y] if y_test is None else [y, y_test], class_names, where)
    for inputs, labels, key in ((x, y, ""), *(((x_test, rest[0], "_test"),) if rest else ())):
        if len(inputs) != len(labels):
            raise ValueError(f"{where}: x{key} has {len(inputs)} samples but y{key} has {len(labels)}")
    num_classes = len(names) if names else int(max(int(t.max()) for t in (y, *rest) if len(t)) + 1)
    if x_test is None:
        return tensor_bundle(x, y, num_classes, p.val_fraction, p.test_fraction, p.split_seed, names)
    if x_test.shape[1:] != x.shape[1:]:
        raise ValueError(f"{where}: x_test has samples of shape {list(x_test.shape[1:])}, x of {list(x.shape[1:])}")
    train, val, _ = split_indices(len(y), p.val_fraction, 0.0, p.split_seed)
    return DataBundle(
        TensorSplit(x[train], y[train]),
        TensorSplit(x[val], y[val]),
        TensorSplit(x_test, rest[0]),
        num_classes,
        tuple(x.shape[1:]),
        names,
    )


def _features(x, where: str) -> Tensor:
    tensor = x.detach().cpu() if isinstance(x, Tensor) else torch.from_numpy(np.ascontiguousarray(np.asarray(x)))
    if tensor.dtype.is_floating_point or tensor.dtype == torch.bool:
        tensor = tensor.float()
    if tensor.dim() == 0:
        raise ValueError(f"{where}: a single number, not an array of samples")
    return tensor[:, None] if tensor.dim() == 1 else tensor


def class_labels(ys: list, class_names: list[str] | None, where: str) -> tuple[list[Tensor], list[str] | None]:
    """Integer labels for each array of `ys` (labels given as text become class indices, sorted, shared by all)."""
    arrays = [np.asarray(y.detach().cpu() if isinstance(y, Tensor) else y) for y in ys]
    if any(a.ndim != 1 for a in arrays):
        raise ValueError(f"{where}: y must be one label per sample, got shape {[list(a.shape) for a in arrays]}")
    if any(a.dtype.kind in "USO" for a in arrays):
        names = sorted({str(v) for a in arrays for v in a.tolist()})
        index = {name: i for i, name in enumerate(names)}
        return [torch.tensor([index[str(v)] for v in a.tolist()], dtype=torch.long) for a in arrays], names
    for a in arrays:
        if a.dtype.kind == "f" and not np.all(np.mod(a, 1) == 0):
            raise ValueError(f"{where}: y holds non-integer values; labels are class indices 0..K-1 (or class names)")
        if len(a) and a.min() < 0:
            raise ValueError(f"{where}: y holds {a.min()}; labels are class indices 0..K-1 (or class names)")
    return [torch.from_numpy(a.astype(np.int64)) for a in arrays], class_names


def dataset_bundle(train: Dataset, test: Dataset | None, p: SplitParams, where: str = "data") -> DataBundle:
    """Splits of torch datasets of `(x, y)` items: validation (and test, without `test`) carved from `train`
    by seeded indices, read through a DataLoader in this process (return a DataBundle for loader workers)."""
    if all(isinstance(d, TensorDataset) and len(d.tensors) == 2 for d in (train, test) if d is not None):
        rest = () if test is None else test.tensors
        return array_bundle(*train.tensors, p, *rest, where=where)
    targets = [_targets(d) for d in (train, test) if d is not None]
    classes = getattr(train, "classes", None)
    num_classes = len(classes) if classes else int(max(int(t.max()) for t in targets if len(t)) + 1)
    cut = split_indices(len(train), p.val_fraction, 0.0 if test is not None else p.test_fraction, p.split_seed)
    splits = [LoaderSplit(Subset(train, i.tolist()), targets[0][i], num_workers=0) for i in cut]
    if test is not None:
        splits[2] = LoaderSplit(test, targets[1], num_workers=0)
    shape = tuple(torch.as_tensor(np.asarray(train[0][0])).shape)
    return DataBundle(*splits, num_classes, shape, [str(c) for c in classes] if classes else None)


def _targets(dataset: Dataset) -> Tensor:
    """Every sample's label: the dataset's `targets` when it has them, else read item by item."""
    targets = getattr(dataset, "targets", None)
    if targets is None or len(targets) != len(dataset):
        targets = [int(dataset[i][1]) for i in range(len(dataset))]
    return torch.as_tensor(np.asarray(targets)).long()


def as_bundle(result: Any, p: SplitParams, where: str) -> DataBundle:
    """What a registered data function returned, as splits: (x, y), (x, y, x_test, y_test), a mapping of
    such arrays, a DataBundle (used as it is), a torch Dataset, or (train, test) torch Datasets."""
    if isinstance(result, DataBundle):
        return result
    if isinstance(result, Dataset):
        return dataset_bundle(result, None, p, where)
    if isinstance(result, Mapping):
        return mapping_bundle(result, p, where)
    if isinstance(result, tuple | list):
        if len(result) == 2 and all(isinstance(r, Dataset) for r in result):
            return dataset_bundle(*result, p, where)
        if len(result) in (2, 4):
            x, y, *test = result
            return array_bundle(x, y, p, *test, where=where)
    raise TypeError(
        f"{where} returned {type(result).__name__}{f' of {len(result)}' if isinstance(result, tuple | list) else ''}; "
        "return (x, y), (x, y, x_test, y_test), a DataBundle, a torch Dataset or (train, test) torch Datasets"
    )
