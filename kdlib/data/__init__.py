"""Datasets by name, found in this package's modules on first use. Each registry entry has `Params` (its
config section) and `load(params) -> DataBundle`."""

from __future__ import annotations

from kdlib.data.base import DATASETS, Batch, DataBundle, LoaderSplit, TensorSplit

__all__ = ["DATASETS", "Batch", "DataBundle", "LoaderSplit", "TensorSplit", "load_data"]


def load_data(spec) -> DataBundle:
    """The splits that a validated data section describes."""
    return DATASETS.get(spec.name).load(spec)
