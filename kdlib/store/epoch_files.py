"""Epoch files (`epoch_XXXX.kda`): one file holds every per-sample array of one epoch.

A magic, the length of a JSON index of (name, dtype, shape, offset), the index, then each array's
bytes starting at a multiple of 64. Here too: reading one sample's values from several such files
(one `pread` each), views into a mapped file, the layout of an older store's `.npy` files, and
`compact`, the dtypes arrays are written in. The underscored helpers serve the rest of kdlib.store.
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path

import numpy as np

EPOCH_FILE_MAGIC = b"KDLIB-EPOCH\x00"  # then the index's length (uint32, little-endian) and the index as JSON
_ALIGN = 64  # every array starts at a multiple of 64 bytes: views of any dtype, cache-line reads


def write_epoch_file(path: Path, arrays: dict[str, np.ndarray]) -> list[tuple[str, str, str, int]]:
    """Arrays by name in one file: a JSON index of (name, dtype, shape, offset), then each array's bytes.

    Returns the index; offsets are from the start of the file, so a reader can pread one sample's
    values or map the file and view each array without copying. `read_epoch_index` reads it back.
    """
    arrays = {name: np.ascontiguousarray(values) for name, values in arrays.items()}
    for name, values in arrays.items():
        if values.dtype.hasobject:
            raise TypeError(f"per-sample array {name!r} holds Python objects ({values.dtype}); give numbers")
    relative, position = [], 0
    for values in arrays.values():
        position += -position % _ALIGN
        relative.append(position)
        position += values.nbytes
    entries = [[name, v.dtype.str, list(v.shape), r] for (name, v), r in zip(arrays.items(), relative, strict=True)]
    index = json.dumps(entries, separators=(",", ":")).encode()
    start = _data_start(len(index))
    layout = [(name, dtype, ",".join(map(str, shape)), start + r) for name, dtype, shape, r in entries]
    with open(path, "wb") as file:
        file.write(EPOCH_FILE_MAGIC + len(index).to_bytes(4, "little") + index)
        file.write(bytes(start - file.tell()))
        for values, (_, _, _, offset) in zip(arrays.values(), layout, strict=True):
            file.write(bytes(offset - file.tell()))
            file.write(values.data if values.nbytes else b"")
    return layout


def read_epoch_index(path: Path) -> list[tuple[str, str, str, int]]:
    """The (name, dtype, shape, offset) of every array in a file that `write_epoch_file` wrote."""
    with open(path, "rb") as file:
        head = file.read(len(EPOCH_FILE_MAGIC) + 4)
        if not head.startswith(EPOCH_FILE_MAGIC):
            raise ValueError(f"{path} is not a kdlib epoch file")
        length = int.from_bytes(head[-4:], "little")
        entries = json.loads(file.read(length))
    start = _data_start(length)
    return [(name, dtype, ",".join(map(str, shape)), start + r) for name, dtype, shape, r in entries]


def _data_start(index_length: int) -> int:
    """Where an epoch file's arrays begin: after the magic, the index's length and the index, 64-aligned."""
    header = len(EPOCH_FILE_MAGIC) + 4 + index_length
    return header + -header % _ALIGN


@functools.cache
def _layout(dtype: str, shape: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """A registry row's dtype and shape, and the bytes of one sample's values."""
    dims = tuple(int(n) for n in shape.split(",")) if shape else ()
    return np.dtype(dtype), dims, np.dtype(dtype).itemsize * math.prod(dims[1:])


def _view(mapped: np.ndarray, dtype: str, shape: str, offset: int) -> np.ndarray:
    """One array of a mapped epoch file, without a copy."""
    dtype, dims, _ = _layout(dtype, shape)
    return mapped[offset : offset + dtype.itemsize * math.prod(dims)].view(dtype).reshape(dims)


def _read_rows(files: list[tuple[str, str, str, int | None]], index: int) -> list[np.ndarray | None]:
    """Sample `index`'s values in each file (path, dtype, shape, data offset); None where a file is gone.

    Each is one read at its byte offset, without mapping or parsing the file. All reads are announced
    to the kernel first (WILLNEED), so on a cold page cache the disk serves them together."""
    opened = []
    try:
        for path, dtype, shape, offset in files:
            dtype, dims, row_bytes = _layout(dtype, shape)
            if not -dims[0] <= index < dims[0]:
                raise IndexError(f"sample {index} is out of range for {dims[0]} samples ({path})")
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:  # truncated by a resumed run since the registry was read
                opened.append(None)
                continue
            position = None if offset is None else offset + (index % dims[0]) * row_bytes
            opened.append((fd, path, dtype, dims, row_bytes, position))
            if position is not None and hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fd, position, row_bytes, os.POSIX_FADV_WILLNEED)
        values = []
        for entry in opened:
            if entry is None:
                values.append(None)
                continue
            fd, path, dtype, dims, row_bytes, position = entry
            if position is None:  # a Fortran-ordered array (kdlib never writes one): map it
                values.append(np.array(np.load(path, mmap_mode="r")[index]))
            else:
                values.append(np.frombuffer(os.pread(fd, row_bytes, position), dtype).reshape(dims[1:]))
        return values
    finally:
        for entry in opened:
            if entry is not None:
                os.close(entry[0])


def _npy_layout(path: Path) -> tuple[np.dtype, tuple[int, ...], int | None]:
    """dtype, shape and the byte offset of the data of a `.npy` file (None for a Fortran-ordered array)."""
    with open(path, "rb") as file:
        version = np.lib.format.read_magic(file)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(file)
        return dtype, shape, None if fortran_order and len(shape) > 1 else file.tell()


def compact(values: np.ndarray) -> np.ndarray:
    """float16 for real values (enough for views), the smallest integer type for labels and flags."""
    values = np.asarray(values)
    if values.dtype.kind == "f":
        return values.astype(np.float16)
    if values.dtype.kind == "b":
        return values
    if values.dtype.kind in "iu" and values.size and values.min() >= 0 and values.max() < 2**15:
        return values.astype(np.int16)
    return values
