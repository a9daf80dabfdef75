"""Your own images: a folder with one subfolder per class (torchvision's ImageFolder layout).

Images are resized (shorter side) and center-cropped to `image_size`, as RGB. The test split is
`test_root` when given (same class folders), else carved from `root` with `test_fraction`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from kdlib.data.base import DATASETS, DataBundle, Split, TensorSplit, split_indices
from kdlib.data.torchvision_sets import ImageParams, decode, image_transforms, loader_split
from kdlib.spec import user_path

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

    def sample_shape(self) -> tuple[int, ...]:
        return (3, self.image_size, self.image_size)

    def class_count(self) -> int | None:
        """The class subfolders of root (None where root is not a folder)."""
        root = user_path(self.root)
        return sum(p.is_dir() for p in root.iterdir()) if root.is_dir() else None

    def path_problems(self, where: str) -> list[str]:
        """A folder that is not there, or has no class subfolders (checked before a run starts)."""
        return [p for field in ("root", "test_root") if (p := folder_problem(getattr(self, field), f"{where}.{field}"))]


def folder_problem(path: str | None, field: str) -> str | None:
    """Why `path` is not a folder of class subfolders, or None."""
    folder = None if path is None else user_path(path)
    if folder is None or (folder.is_dir() and any(p.is_dir() for p in folder.iterdir())):
        return None
    what = "has no class subfolders" if folder.is_dir() else "is not a folder"
    return (f"{field}: {path} {what} (from {Path.cwd()}); point {field} at a folder with one subfolder "
            "of images per class")


def _rgb(path: str):
    """An image as RGB; a file that cannot be decoded is named (a DataLoader would only show a traceback)."""
    from PIL import Image

    try:
        with open(path, "rb") as file:
            return Image.open(file).convert("RGB")
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"{path}: the image cannot be decoded ({error}); remove or replace it") from None


def unreadable(path: str) -> str | None:
    """Why the image at `path` cannot be read, from its size and header (cheap: the pixels are not decoded)."""
    from PIL import Image

    try:
        if os.path.getsize(path) == 0:
            return "an empty file"
        with Image.open(path) as image:
            image.size  # noqa: B018  (the header is parsed on open)
    except (OSError, SyntaxError, ValueError) as error:
        return f"not a readable image ({error})"
    return None


def check_images(paths: list[str], field: str) -> None:
    """ValueError naming every file of an indexed folder that is empty or has no readable image header."""
    with ThreadPoolExecutor(8) as pool:  # file reads: threads overlap their waits
        bad = [(p, why) for p, why in zip(paths, pool.map(unreadable, paths), strict=True) if why]
    if bad:
        listed = "; ".join(f"{p}: {why}" for p, why in bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ValueError(f"{field}: {len(bad)} of {len(paths)} images cannot be read: {listed}. Remove or replace them")


def _open(path: str, field: str):
    """torchvision's ImageFolder over `path`, with errors that name the config field to fix; every image's
    header is checked as the folder is indexed."""
    from torchvision.datasets import ImageFolder

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"data.{field}={path!r} is not a folder; point data.{field} at a folder "
            "with one subfolder of images per class"
        )
    try:
        dataset = ImageFolder(str(folder), loader=_rgb)
    except FileNotFoundError as e:  # no class folders, or class folders without images
        raise FileNotFoundError(
            f"data.{field}={path!r}: {e} Point data.{field} at a folder with one subfolder of images per class"
        ) from e
    check_images([p for p, _ in dataset.samples], f"data.{field}")
    return dataset


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
