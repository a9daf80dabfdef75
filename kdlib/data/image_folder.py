"""Your own images: a folder with one subfolder per class (torchvision's ImageFolder layout).

Images are resized (shorter side) and center-cropped to `image_size`, as RGB. The test split is
`test_root` when given (same class folders), else carved from `root` with `test_fraction`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from kdlib.data.base import DATASETS, DataBundle, Split, TensorSplit, split_indices
from kdlib.data.torchvision_sets import ImageParams, decode, image_transforms, loader_split

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Params(ImageParams):
    name: Literal["image_folder"] = "image_folder"
    root: str = Field("data/images", description="folder with one subfolder of images per class")
    test_root: str | None = Field(
        None,
        description="folder with the same class subfolders for the test split; "
        "None: carve the test split from root with test_fraction",
    )
    image_size: int = Field(32, ge=8, description="side of the square images (resize, then center crop)")


def _open(path: str, field: str):
    """torchvision's ImageFolder over `path`, with errors that name the config field to fix."""
    from torchvision.datasets import ImageFolder

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"data.{field}={path!r} is not a folder; point data.{field} at a folder "
            "with one subfolder of images per class"
        )
    try:
        return ImageFolder(str(folder))
    except FileNotFoundError as e:  # no class folders, or class folders without images
        raise FileNotFoundError(
            f"data.{field}={path!r}: {e} Point data.{field} at a folder with one subfolder of images per class"
        ) from e


@DATASETS.register("image_folder")
class ImageFolderSet:
    Params = Params

    @staticmethod
    def load(p: Params) -> DataBundle:
        pool = _open(p.root, "root")
        test = _open(p.test_root, "test_root") if p.test_root else None
        if test is not None and test.classes != pool.classes:
            raise ValueError(
                f"data.test_root has classes {test.classes} but data.root has {pool.classes}; "
                "both need the same class subfolders"
            )
        y_pool = torch.tensor(pool.targets)
        train_idx, val_idx, test_idx = split_indices(
            len(pool), p.val_fraction, 0.0 if test is not None else p.test_fraction, p.split_seed
        )
        train_tf, eval_tf = image_transforms(p, IMAGENET_MEAN, IMAGENET_STD, p.image_size, flip=True, resize=True)
        splits: tuple[Split, Split, Split]
        if p.held_in_memory:
            x, y = decode(pool, eval_tf, p.num_workers)
            x_test, y_test = decode(test, eval_tf, p.num_workers) if test is not None else (x[test_idx], y[test_idx])
            splits = (
                TensorSplit(x[train_idx], y[train_idx]),
                TensorSplit(x[val_idx], y[val_idx]),
                TensorSplit(x_test, y_test),
            )
        elif test is not None:
            splits = (
                loader_split(pool, y_pool, train_tf, p.num_workers, train_idx),
                loader_split(pool, y_pool, eval_tf, p.num_workers, val_idx),
                loader_split(test, torch.tensor(test.targets), eval_tf, p.num_workers),
            )
        else:
            splits = tuple(
                loader_split(pool, y_pool, tf, p.num_workers, idx)
                for tf, idx in ((train_tf, train_idx), (eval_tf, val_idx), (eval_tf, test_idx))
            )
        return DataBundle(*splits, len(pool.classes), (3, p.image_size, p.image_size), list(pool.classes))
