"""Epoch files (`epoch_XXXX.safetensors`): one file holds every per-sample array of one epoch.

The safetensors format, so `safetensors.numpy.load_file(path)` opens one: the length of a JSON header
(uint64, little-endian), the header (each array's dtype, shape and data_offsets), padded with spaces
so the data start at a multiple of 64, then the arrays back to back. The format allows no gap between
arrays, so they go largest item size first: each starts aligned to its own dtype, and a mapped file
gives aligned views. Here too: reading one sample's values from several such files (one `pread`
each), views into a mapped file, the formats of older stores (`.kda`: a magic, a JSON index, arrays at
multiples of 64; one `.npy` per array), and `compact`, the dtypes arrays are written in. The
underscored helpers serve the rest of kdlib.store.
"""

from __future__ import annotations

import functools
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np

EPOCH_FILE_MAGIC = b"KDLIB-EPOCH\x00"  # a `.kda` file's start: then the index's length (uint32) and the index
_ALIGN = 64  # a `.kda` file's arrays, and a safetensors file's data, start at a multiple of 64 bytes
# safetensors' dtype names and numpy's (little-endian, as the format is)
_SAFETENSORS_DTYPES = {"BOOL": "|b1", "U8": "|u1", "I8": "|i1", "I16": "<i2", "U16": "<u2", "F16": "<f2",
                       "I32": "<i4", "U32": "<u4", "F32": "<f4", "I64": "<i8", "U64": "<u8", "F64": "<f8"}  # fmt: skip
_NUMPY_DTYPES = {np.dtype(numpy): name for name, numpy in _SAFETENSORS_DTYPES.items()}


def write_epoch_file(path: Path, arrays: dict[str, np.ndarray]) -> list[tuple[str, str, str, int]]:
    """Arrays by name in one safetensors file; returns the (name, dtype, shape, offset) of each.

    Offsets are from the start of the file, so a reader can pread one sample's values or map the file
    and view each array without copying. `read_epoch_index` reads them back from the file.
    """
    arrays = {name: _storable(name, values) for name, values in arrays.items()}
    order = sorted(arrays, key=lambda name: (-arrays[name].dtype.itemsize, name))  # as safetensors' own writer
    header, position = {}, 0
    for name in order:
        values = arrays[name]
        header[name] = {"dtype": _NUMPY_DTYPES[values.dtype], "shape": list(values.shape),
                        "data_offsets": [position, position + values.nbytes]}  # fmt: skip
        position += values.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % _ALIGN)
    with open(path, "wb") as file:
        file.write(len(text).to_bytes(8, "little") + text)
        for name in order:
            if arrays[name].nbytes:
                file.write(arrays[name].data)
    return _safetensors_layout(header, 8 + len(text))


def _storable(name: str, values: np.ndarray) -> np.ndarray:
    """`values` as a contiguous little-endian array of a dtype safetensors holds, or a TypeError naming it."""
    values = np.ascontiguousarray(values)
    if values.dtype.hasobject:
        raise TypeError(f"per-sample array {name!r} holds Python objects ({values.dtype}); give numbers")
    little = values.dtype.newbyteorder("<") if values.dtype.byteorder == ">" else values.dtype
    if little not in _NUMPY_DTYPES:
        raise TypeError(f"per-sample array {name!r} is {values.dtype}, which an epoch file cannot hold; give numbers")
    return values.astype(little, copy=False)


def read_epoch_index(path: Path) -> list[tuple[str, str, str, int]]:
    """The (name, dtype, shape, offset) of every array in an epoch file: safetensors, or an older `.kda`."""
    with open(path, "rb") as file:
        head = file.read(len(EPOCH_FILE_MAGIC) + 4)
        if head.startswith(EPOCH_FILE_MAGIC):
            length = int.from_bytes(head[-4:], "little")
            entries = json.loads(file.read(length))
            start = _data_start(length)
            return [(name, dtype, ",".join(map(str, shape)), start + r) for name, dtype, shape, r in entries]
        length = int.from_bytes(head[:8], "little")
        file.seek(8)
        text = file.read(length) if 2 <= length <= 100_000_000 else b""
    try:
        header = json.loads(text) if text.startswith(b"{") else None
    except ValueError:
        header = None
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a kdlib epoch file (neither safetensors nor .kda)")
    unknown = {info["dtype"] for name, info in header.items() if name != "__metadata__"} - set(_SAFETENSORS_DTYPES)
    if unknown:
        raise ValueError(f"{path} holds arrays of {', '.join(sorted(unknown))}, which numpy has no dtype for")
    return _safetensors_layout(header, 8 + length)


def _safetensors_layout(header: dict, start: int) -> list[tuple[str, str, str, int]]:
    """(name, numpy dtype, shape, offset from the file's start) of each array of a safetensors header, in file order."""
    rows = [(name, _SAFETENSORS_DTYPES[info["dtype"]], ",".join(map(str, info["shape"])), start + info["data_offsets"][0])
            for name, info in header.items() if name != "__metadata__"]  # fmt: skip
    return sorted(rows, key=lambda row: (row[3], -np.dtype(row[1]).itemsize, row[0]))  # empty arrays share offsets


def _data_start(index_length: int) -> int:
    """Where a `.kda` file's arrays begin: after the magic, the index's length and the index, 64-aligned."""
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
                data = os.pread(fd, row_bytes, position)
                if len(data) < row_bytes:  # a file cut short (a disk that filled, a copy that stopped): skip its epoch
                    warnings.warn(f"{path} is truncated; its epoch is skipped", stacklevel=2)
                    values.append(None)
                    continue
                values.append(np.frombuffer(data, dtype).reshape(dims[1:]))
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
