"""Datasets by name. Each registry entry has `Params` (its config section) and `load(params) -> DataBundle`."""

from __future__ import annotations

from kdlib.data import digits, domain_pair, image_folder, mnist1d, torchvision_sets, toy2d  # noqa: F401  (registers)
from kdlib.data.base import DATASETS, Batch, DataBundle, LoaderSplit, TensorSplit

__all__ = ["DATASETS", "Batch", "DataBundle", "LoaderSplit", "TensorSplit", "load_data"]


def load_data(spec) -> DataBundle:
    """The splits that a validated data section describes."""
    return DATASETS.get(spec.name).load(spec)
