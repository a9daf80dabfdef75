"""RunStore's per-sample arrays: the `samples` table that registers them, and their epoch files.

An epoch's arrays are written into one epoch file (safetensors) in the run's `samples/` folder
(renamed into place, then registered with each array's dtype, shape and offset), so a reader never
sees half an epoch. Epoch files of older stores (`.kda`) read the same way; a run written before the
registry existed (one `.npy` per array) is registered from its folders when first read. Here too the
tables of every epoch at once (`per_sample_frame`, `history`). Mixed into RunStore (kdlib.store.runs),
whose `_connect` and `run_dir` it uses.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd

from kdlib.paths import temporary_beside
from kdlib.store.epoch_files import _npy_layout, _read_rows, _view, compact, read_epoch_index, write_epoch_file


class PerSampleArrays:
    """The per-sample arrays of a store's runs, by run, epoch, split and key."""

    def samples_dir(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "samples"

    def per_sample_epochs(self, run_id: str, split: str | None = None, key: str | None = None) -> list[int]:
        """Epochs with per-sample arrays (of `split`, and of `key` in it, when given)."""
        query, params = "SELECT DISTINCT epoch FROM samples WHERE run_id = ?", (run_id,)
        for column, value in (("split", split), ("key", key)):
            if value is not None:
                query, params = query + f" AND {column} = ?", (*params, value)
        return [row[0] for row in self._registered(run_id, query + " ORDER BY epoch", params)]

    def per_sample(self, run_id: str, epoch: int, split: str = "train") -> dict[str, np.ndarray]:
        """The per-sample arrays of one epoch, by key; values are indexed by dataset index."""
        rows = self._registered(
            run_id,
            "SELECT epoch, split, key, dtype, shape, offset, file FROM samples WHERE run_id = ? AND epoch = ?",
            (run_id, epoch),
        )
        if not rows:
            raise KeyError(
                f"run {run_id} has no per-sample values for epoch {epoch}; "
                f"it has epochs {self.per_sample_epochs(run_id)}"
            )
        found, mapped = {}, {}
        for row in sorted((row for row in rows if row["split"] == split), key=lambda row: row["key"]):
            path = self.samples_dir(run_id) / _file_of(row, split, row["key"])
            if row["file"]:  # the epoch's file, mapped once; each array a view into it
                if path not in mapped:
                    mapped[path] = np.memmap(path, np.uint8, mode="r")
                found[row["key"]] = _view(mapped[path], row["dtype"], row["shape"], row["offset"])
            else:  # an older store's .npy
                found[row["key"]] = np.load(path, mmap_mode="r")
        return found

    def trajectory(self, run_id: str, key: str, index: int, split: str = "train") -> pd.Series | pd.DataFrame:
        """One sample's value of `key` at every recorded epoch: a Series by epoch, or for arrays of more
        than one value per sample (`probs`) a frame, one row per epoch. One small read per epoch file."""
        rows = self._registered(
            run_id,
            "SELECT epoch, dtype, shape, offset, file FROM samples WHERE run_id = ? AND split = ? AND key = ? "
            "ORDER BY epoch",
            (run_id, split, key),
        )
        folder = self.samples_dir(run_id)
        files = [(str(folder / _file_of(r, split, key)), r["dtype"], r["shape"], r["offset"]) for r in rows]
        found = [(r["epoch"], v) for r, v in zip(rows, _read_rows(files, index), strict=True) if v is not None]
        epochs, values = [e for e, _ in found], [v for _, v in found]
        if values and values[0].ndim:
            return pd.DataFrame(np.stack(values).astype(float), index=pd.Index(epochs, name="epoch"))
        return pd.Series([float(v) for v in values], index=epochs, name=key, dtype=float).rename_axis("epoch")

    def per_sample_splits(self, run_id: str) -> list[str]:
        """The splits with per-sample arrays (train, val, test, probe, ...)."""
        query = "SELECT DISTINCT split FROM samples WHERE run_id = ? ORDER BY split"
        return [row[0] for row in self._registered(run_id, query, (run_id,))]

    def per_sample_frame(self, run_id: str, split: str = "train", keys: str | list[str] | None = None) -> pd.DataFrame:
        """Every epoch's values of `split` in one wide table: columns epoch, index (the dataset index) and one
        per key (float16 values as float32), one row per sample and epoch. A key an epoch lacks is NaN
        there; arrays of several values per sample (`probs`) are left out: `per_sample` has them."""
        wanted = [keys] if isinstance(keys, str) else keys
        frames = []
        for epoch in self.per_sample_epochs(run_id, split):
            arrays = self.per_sample(run_id, epoch, split)
            columns = {k: pd.Series(_widened(v)) for k, v in arrays.items() if v.ndim == 1 and k in (wanted or arrays)}
            if columns:
                frames.append(pd.DataFrame(columns).rename_axis("index").reset_index().assign(epoch=epoch))
        if not frames:
            return pd.DataFrame(columns=["epoch", "index"])
        frame = pd.concat(frames, ignore_index=True)
        return frame[["epoch", "index", *sorted(c for c in frame.columns if c not in ("epoch", "index"))]]

    def per_sample_history(
        self, run_id: str, keys: str | list[str] | None = None, split: str | None = None
    ) -> pd.DataFrame:
        """Every epoch's per-sample values in long format: columns epoch, split, index, key, value (a float),
        one row per value; `split` and `key` are categoricals. Arrays of several values per sample are left out."""
        wanted = [keys] if isinstance(keys, str) else keys
        parts = []  # (epoch, split, key, values)
        for name in [split] if split else self.per_sample_splits(run_id):
            for epoch in self.per_sample_epochs(run_id, name):
                arrays = self.per_sample(run_id, epoch, name)
                parts += [(epoch, name, k, v) for k, v in arrays.items() if v.ndim == 1 and k in (wanted or arrays)]
        sizes = [len(values) for *_, values in parts]
        splits, split_codes = np.unique([p[1] for p in parts], return_inverse=True)
        names, key_codes = np.unique([p[2] for p in parts], return_inverse=True)
        return pd.DataFrame(
            {
                "epoch": np.repeat(np.array([p[0] for p in parts], dtype=np.int64), sizes),
                "split": pd.Categorical.from_codes(np.repeat(split_codes, sizes), splits.astype(str)),
                "index": np.concatenate([np.arange(n) for n in sizes]) if parts else np.zeros(0, np.int64),
                "key": pd.Categorical.from_codes(np.repeat(key_codes, sizes), names.astype(str)),
                "value": np.concatenate([v.astype(np.float64) for *_, v in parts]) if parts else np.zeros(0),
            }
        )

    def write_per_sample(
        self, run_id: str, epoch: int, arrays: dict[str, np.ndarray], connection: sqlite3.Connection | None = None
    ) -> None:
        """Write an epoch's arrays ("split.key" -> array) into one file under a temporary name, rename
        it into place, then register them.

        One file an epoch, not one per array: the writer thread makes a handful of system calls, so
        it hardly competes with training for the interpreter and the cores.
        """
        folder = self.samples_dir(run_id)
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"epoch_{epoch:04d}.safetensors"
        tmp = temporary_beside(final)
        layout = write_epoch_file(tmp, {name: compact(values) for name, values in arrays.items()})
        os.replace(tmp, final)
        self._insert_registry(
            [(run_id, *name.split(".", 1), epoch, dtype, shape, offset, final.name) for name, dtype, shape, offset in layout],
            connection,
        )

    def _register(self, run_id: str, entries: list[Path]) -> None:
        """Enter the arrays of epoch files (or an older store's epoch folders) in the registry."""
        rows = []
        for entry in entries:
            epoch = epoch_of(entry)
            if entry.is_file():
                for name, dtype, shape, offset in read_epoch_index(entry):
                    rows.append((run_id, *name.split(".", 1), epoch, dtype, shape, offset, entry.name))
                continue
            for path in entry.glob("*.npy"):
                split, key = path.stem.split(".", 1)
                dtype, shape, offset = _npy_layout(path)
                rows.append((run_id, split, key, epoch, dtype.str, ",".join(map(str, shape)), offset, None))
        self._insert_registry(rows)

    def _insert_registry(self, rows: list[tuple], connection: sqlite3.Connection | None = None) -> None:
        with self._connect(connection) as db:
            db.executemany(
                "INSERT OR REPLACE INTO samples (run_id, split, key, epoch, dtype, shape, offset, file) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def _registered(self, run_id: str, query: str, params: tuple) -> list[sqlite3.Row]:
        """Rows of the registry; a run written before the registry existed is registered from its folders first."""
        with self._connect() as db:
            rows = db.execute(query, params).fetchall()
            if rows or db.execute("SELECT 1 FROM samples WHERE run_id = ? LIMIT 1", (run_id,)).fetchone():
                return rows
        entries = self._epoch_entries(run_id)
        if not entries:
            return rows
        self._register(run_id, entries)
        with self._connect() as db:
            return db.execute(query, params).fetchall()

    def _epoch_entries(self, run_id: str) -> list[Path]:
        """The epoch files (`epoch_XXXX.safetensors`, or `.kda` of older stores) and an older store's epoch
        folders (`epoch_XXXX/`)."""
        folder = self.samples_dir(run_id)
        if not folder.exists():
            return []
        return sorted(p for p in folder.glob("epoch_*") if p.suffix in EPOCH_SUFFIXES or (p.is_dir() and not p.suffix))


EPOCH_SUFFIXES = (".safetensors", ".kda")


def epoch_of(entry: Path) -> int:
    """The epoch of an epoch file or folder: 3 for `epoch_0003.safetensors`, `epoch_0003.kda`, `epoch_0003/`."""
    return int(entry.name.removeprefix("epoch_").split(".")[0])


def _widened(values: np.ndarray) -> np.ndarray:
    """float16 values as float32 (pandas and Parquet handle float16 poorly); any other array as it is."""
    return values.astype(np.float32) if values.dtype == np.float16 else np.asarray(values)


def _file_of(row: sqlite3.Row, split: str, key: str) -> str:
    """A registered array's file in the run's samples folder: its epoch's file, or an older store's `.npy`."""
    return row["file"] or f"epoch_{row['epoch']:04d}/{split}.{key}.npy"
