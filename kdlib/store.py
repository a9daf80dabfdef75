"""RunStore: where runs write what they learn and where every view reads it.

One SQLite file in WAL mode (`$KDLIB_HOME/store.sqlite`, default `./runs`) holds the runs (config,
status, times, error, control flag), their scalar metrics (with the time each was produced), their
events and a registry of their per-sample arrays; a folder per run holds the arrays themselves (one
file per epoch, `samples/epoch_XXXX.kda`, written under a temporary name and renamed, then
registered with each array's dtype, shape and data offset, so a reader never sees half an epoch
and reads one sample's trajectory with one small read per epoch), checkpoints and route weights. Readers open their own
connection per call, so they work from any process or thread while a writer is running.
"""

from __future__ import annotations

import functools
import json
import math
import os
import queue
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from kdlib.events import CheckpointSaved, EpochEnded, Event, RunEnded, RunStarted, StepLogged
from kdlib.paths import kdlib_home, temporary_beside

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL, method TEXT, config TEXT NOT NULL,
    status TEXT NOT NULL, control TEXT NOT NULL DEFAULT 'run', created REAL NOT NULL, started REAL, ended REAL,
    error TEXT, pid INTEGER, epoch INTEGER, total_epochs INTEGER, steps_per_epoch INTEGER, device TEXT
);
CREATE TABLE IF NOT EXISTS study_trials (
    study TEXT NOT NULL, run_id TEXT NOT NULL, trial INTEGER NOT NULL, params TEXT NOT NULL, state TEXT NOT NULL,
    value REAL, metric TEXT, direction TEXT
);
CREATE INDEX IF NOT EXISTS study_trials_by_study ON study_trials (study, trial);
CREATE TABLE IF NOT EXISTS metrics (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, scope TEXT NOT NULL,
    epoch INTEGER NOT NULL, step INTEGER NOT NULL, key TEXT NOT NULL, value REAL, time REAL
);
CREATE INDEX IF NOT EXISTS metrics_by_run ON metrics (run_id, id);
CREATE TABLE IF NOT EXISTS samples (
    run_id TEXT NOT NULL, split TEXT NOT NULL, key TEXT NOT NULL, epoch INTEGER NOT NULL,
    dtype TEXT NOT NULL, shape TEXT NOT NULL, offset INTEGER, file TEXT,
    PRIMARY KEY (run_id, split, key, epoch)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, time REAL NOT NULL, kind TEXT NOT NULL, message TEXT
);
"""

ACTIVE = ("queued", "running", "paused")


class RunNotFound(KeyError):
    def __str__(self) -> str:
        return self.args[0]


class RunStore:
    """Reader and writer of one kdlib home folder."""

    def __init__(self, home: str | os.PathLike | None = None) -> None:
        self.home = kdlib_home(home)
        self.path = self.home / "store.sqlite"
        with self._connect() as db:
            db.executescript(SCHEMA)
            _add_column(db, "metrics", "time REAL")  # stores made before metrics had their time
            _add_column(db, "samples", "file TEXT")  # stores made when each array had its own .npy

    @contextmanager
    def _connect(self, connection: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """A connection in a transaction: a new one, or `connection` (a writer's own, kept open)."""
        if connection is not None:
            with connection:
                yield connection
            return
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.row_factory = sqlite3.Row
            with db:
                yield db
        finally:
            db.close()

    def run_dir(self, run_id: str) -> Path:
        return self.home / run_id

    # --- runs -------------------------------------------------------------------------------

    def create_run(self, config, kind: str = "student", name: str | None = None) -> str:
        """Register a run as queued, with its config saved beside it; returns its id."""
        run_id = f"{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
        self.run_dir(run_id).mkdir(parents=True)
        (self.run_dir(run_id) / "config.yaml").write_text(config.to_yaml())
        with self._connect() as db:
            db.execute(
                "INSERT INTO runs (id, name, kind, method, config, status, created, total_epochs) "
                "VALUES (?, ?, ?, ?, ?, 'queued', ?, ?)",
                (
                    run_id,
                    name or config.run_name(),
                    kind,
                    config.method.name,
                    config.to_yaml(),
                    time.time(),
                    config.epochs,
                ),
            )
        return run_id

    def run(self, run_id: str) -> dict:
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(f"no run {run_id!r} in {self.home}; `python -m kdlib ls` lists the runs")
        run = dict(row)
        if run["status"] in ("running", "paused") and run["pid"] and not _alive(run["pid"]):
            error = (
                f"the run's process (pid {run['pid']}) ended without reporting; what it printed is in "
                f"{self.run_dir(run_id) / 'worker.log'}; `python -m kdlib resume {run_id}` continues it"
            )
            self.update_run(run_id, status="failed", error=error, ended=time.time())
            run.update(status="failed", error=error)
        return run

    def runs(self, kind: str | None = None) -> pd.DataFrame:
        """Every run, newest first, with its last epoch's test accuracy when it has one."""
        query = (
            "SELECT r.id, r.name, r.kind, r.method, r.status, r.epoch, r.total_epochs, r.created, r.started, "
            "r.ended, r.error, (SELECT value FROM metrics m WHERE m.run_id = r.id AND m.key = 'test.acc' "
            "ORDER BY m.id DESC LIMIT 1) AS test_acc FROM runs r"
        )
        with self._connect() as db:
            frame = pd.read_sql_query(
                query + (" WHERE kind = ?" if kind else "") + " ORDER BY created DESC",
                db,
                params=(kind,) if kind else None,
            )
        frame["epochs_done"] = (frame["epoch"] + 1).fillna(0).astype(int)  # `epoch` is the last finished, 0-based
        return frame

    def latest_run_id(self, kind: str | None = "student") -> str:
        frame = self.runs(kind)
        if frame.empty:
            raise RunNotFound(f"no runs in {self.home} yet; start one with `python -m kdlib run CONFIG`")
        return frame.id.iloc[0]

    def config(self, run_id: str):
        import yaml

        from kdlib.config import config_from

        return config_from(yaml.safe_load(self.run(run_id)["config"]))

    def update_run(self, run_id: str, connection: sqlite3.Connection | None = None, **fields) -> None:
        columns = ", ".join(f"{k} = ?" for k in fields)
        with self._connect(connection) as db:
            db.execute(f"UPDATE runs SET {columns} WHERE id = ?", (*fields.values(), run_id))

    def end_run(self, run_id: str, status: str, error: str | None = None) -> None:
        self.update_run(run_id, status=status, error=error, ended=time.time())
        self.log_event(run_id, status, error or "")

    def rename_run(self, run_id: str, name: str) -> None:
        self.run(run_id)
        self.update_run(run_id, name=name)

    def delete_run(self, run_id: str) -> None:
        if self.run(run_id)["status"] in ACTIVE:
            self.request(run_id, "stop")
        with self._connect() as db:
            for table, column in (("metrics", "run_id"), ("events", "run_id"), ("samples", "run_id"), ("runs", "id")):
                db.execute(f"DELETE FROM {table} WHERE {column} = ?", (run_id,))
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)

    # --- control ----------------------------------------------------------------------------

    def request(self, run_id: str, action: str) -> None:
        """Ask a running run to pause, resume or stop; it obeys at its next logged step."""
        control = {"pause": "pause", "resume": "run", "stop": "stop"}[action]
        self.run(run_id)
        self.update_run(run_id, control=control)
        self.log_event(run_id, "control", action)

    def control(self, run_id: str) -> str:
        with self._connect() as db:
            row = db.execute("SELECT control FROM runs WHERE id = ?", (run_id,)).fetchone()
        return row["control"] if row else "stop"

    def log_event(self, run_id: str, kind: str, message: str = "") -> None:
        with self._connect() as db:
            db.execute(
                "INSERT INTO events (run_id, time, kind, message) VALUES (?, ?, ?, ?)",
                (run_id, time.time(), kind, message),
            )

    def events(self, run_id: str) -> pd.DataFrame:
        with self._connect() as db:
            return pd.read_sql_query(
                "SELECT time, kind, message FROM events WHERE run_id = ? ORDER BY id", db, params=(run_id,)
            )

    # --- studies: hyperparameter sweeps (kdlib.sweep), one run per trial ---------------------

    def add_study_trial(self, study: str, run_id: str, trial: int, params: dict, metric: str, direction: str) -> None:
        """Record run `run_id` as trial number `trial` of `study`, with the params it was given (state running)."""
        with self._connect() as db:
            db.execute(
                "INSERT INTO study_trials (study, run_id, trial, params, state, metric, direction) "
                "VALUES (?, ?, ?, ?, 'running', ?, ?)",
                (study, run_id, trial, json.dumps(params), metric, direction),
            )

    def end_study_trial(self, run_id: str, state: str, value: float | None) -> None:
        """A trial's outcome: state complete, pruned or failed, and its value (the metric at its last epoch)."""
        with self._connect() as db:
            db.execute("UPDATE study_trials SET state = ?, value = ? WHERE run_id = ?", (state, value, run_id))

    def studies(self) -> list[str]:
        """The studies with trials in this store, the one with the newest trial first."""
        with self._connect() as db:
            rows = db.execute("SELECT study FROM study_trials GROUP BY study ORDER BY MAX(rowid) DESC").fetchall()
        return [row["study"] for row in rows]

    def study_trials(self, study: str) -> pd.DataFrame:
        """One row per trial of `study` whose run is in this store: trial, run_id, name, state, value, status
        (the run's), metric, direction, then one column per searched param (a config path)."""
        query = (
            "SELECT s.trial, s.run_id, r.name, s.state, s.value, r.status, s.metric, s.direction, s.params "
            "FROM study_trials s JOIN runs r ON r.id = s.run_id WHERE s.study = ? ORDER BY s.trial"
        )
        with self._connect() as db:
            frame = pd.read_sql_query(query, db, params=(study,))
        return frame.join(pd.DataFrame([json.loads(p) for p in frame.pop("params")], index=frame.index))

    # --- metrics ----------------------------------------------------------------------------

    def metrics(self, run_id: str, scope: str | None = None, since_id: int = 0) -> pd.DataFrame:
        """Scalars in long form (id, scope, epoch, step, key, value, time); `since_id` follows a live run.

        `time` is when the run produced the value (seconds since the epoch; empty for older stores)."""
        query = "SELECT id, scope, epoch, step, key, value, time FROM metrics WHERE run_id = ? AND id > ?"
        params: tuple = (run_id, since_id)
        if scope:
            query, params = query + " AND scope = ?", (*params, scope)
        with self._connect() as db:
            return pd.read_sql_query(query + " ORDER BY id", db, params=params)

    def epoch_metrics(self, run_id: str) -> pd.DataFrame:
        """One row per finished epoch: the global `step` it ended at, and one column per scalar."""
        frame = self.metrics(run_id, scope="epoch")
        if frame.empty:
            return pd.DataFrame(index=pd.Index([], name="epoch"), columns=["step"])
        wide = frame.pivot_table(index="epoch", columns="key", values="value", aggfunc="last")
        return wide.join(frame.groupby("epoch").step.max()).rename_axis(columns=None)

    def step_metrics(self, run_id: str) -> pd.DataFrame:
        frame = self.metrics(run_id, scope="step")
        if frame.empty:
            return pd.DataFrame(index=pd.Index([], name="step"))
        return frame.pivot_table(index="step", columns="key", values="value", aggfunc="last").rename_axis(columns=None)

    # --- per-sample arrays ------------------------------------------------------------------

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
        final = folder / f"epoch_{epoch:04d}.kda"
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
            epoch = int(entry.name.removeprefix("epoch_").removesuffix(".kda"))
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
        """The epoch files (`epoch_XXXX.kda`) and an older store's epoch folders (`epoch_XXXX/`)."""
        folder = self.samples_dir(run_id)
        if not folder.exists():
            return []
        return sorted(p for p in folder.glob("epoch_*") if p.suffix == ".kda" or (p.is_dir() and not p.suffix))

    def save_analysis(self, run_id: str, name: str, frame: pd.DataFrame) -> pd.DataFrame:
        """Keep an analysis of a run (a frame) beside it; `analysis(run_id, name)` reads it back."""
        folder = self.run_dir(run_id) / "analysis"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = temporary_beside(folder / f"{name}.csv")
        frame.to_csv(tmp)
        tmp.replace(folder / f"{name}.csv")
        return frame

    def analysis(self, run_id: str, name: str) -> pd.DataFrame:
        return pd.read_csv(self.run_dir(run_id) / "analysis" / f"{name}.csv", index_col=0)

    def analyses(self, run_id: str) -> list[str]:
        folder = self.run_dir(run_id) / "analysis"
        return sorted(p.name.removesuffix(".csv") for p in folder.glob("*.csv"))

    def truncate(self, run_id: str, from_epoch: int) -> None:
        """Forget what a run wrote for `from_epoch` on: a resumed run writes it again."""
        self.per_sample_epochs(run_id)  # registers the epochs kept of a run written before the registry
        # files go before their rows: a reader never finds a run without rows but with stale files
        for entry in self._epoch_entries(run_id):
            if int(entry.name.removeprefix("epoch_").removesuffix(".kda")) >= from_epoch:
                entry.unlink() if entry.is_file() else shutil.rmtree(entry)
        for stale in self.samples_dir(run_id).glob(".epoch_*.tmp"):  # left by a writer killed mid-write
            stale.unlink(missing_ok=True)
        with self._connect() as db:
            # from epoch 0 the run starts over, its preparation phase (epoch -1) included
            db.execute(
                "DELETE FROM metrics WHERE run_id = ? AND epoch >= ?", (run_id, from_epoch if from_epoch else -1)
            )
            db.execute("DELETE FROM samples WHERE run_id = ? AND epoch >= ?", (run_id, from_epoch))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a finished child that nobody waited for is a zombie: gone for our purposes
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _add_column(db: sqlite3.Connection, table: str, column: str) -> None:
    if column.split()[0] not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
        try:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
        except sqlite3.OperationalError as error:  # another process added it first
            if "duplicate column" not in str(error):
                raise


def _npy_layout(path: Path) -> tuple[np.dtype, tuple[int, ...], int | None]:
    """dtype, shape and the byte offset of the data of a `.npy` file (None for a Fortran-ordered array)."""
    with open(path, "rb") as file:
        version = np.lib.format.read_magic(file)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(file)
        return dtype, shape, None if fortran_order and len(shape) > 1 else file.tell()


@functools.cache
def _layout(dtype: str, shape: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """A registry row's dtype and shape, and the bytes of one sample's values."""
    dims = tuple(int(n) for n in shape.split(",")) if shape else ()
    return np.dtype(dtype), dims, np.dtype(dtype).itemsize * math.prod(dims[1:])


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


def _file_of(row: sqlite3.Row, split: str, key: str) -> str:
    """A registered array's file in the run's samples folder: its epoch's file, or an older store's `.npy`."""
    return row["file"] or f"epoch_{row['epoch']:04d}/{split}.{key}.npy"


def _view(mapped: np.ndarray, dtype: str, shape: str, offset: int) -> np.ndarray:
    """One array of a mapped epoch file, without a copy."""
    dtype, dims, _ = _layout(dtype, shape)
    return mapped[offset : offset + dtype.itemsize * math.prod(dims)].view(dtype).reshape(dims)


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


class StoreSink:
    """Writes one run's events into the store from a background thread, in the order they came.

    Writing per-sample arrays and scalars overlaps the next steps of training; `close()` returns
    once everything is written. An error in the writer is raised at the next `emit` or `close`.
    Step scalars that come faster than `STEP_DELAY` apart are committed together, at most that much
    later (a commit each costs the training process's cores more than the rows themselves).
    """

    STEP_DELAY = 0.1  # seconds a step's scalars may wait for the next ones

    def __init__(self, store: RunStore, run_id: str) -> None:
        self.store, self.run_id = store, run_id
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._write_all, name=f"kdlib-store-{run_id}", daemon=True)
        self._thread.start()

    def emit(self, event: Event) -> None:
        self._raise_error()
        self._queue.put(event)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise_error()

    def flush(self) -> None:
        """Return once everything emitted so far is written (the trainer checkpoints an epoch only then)."""
        written = threading.Event()
        self._queue.put(written)
        while self._thread.is_alive() and not written.wait(0.5):
            pass
        self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"writing run {self.run_id} to the store failed: {error}") from error

    def _write_all(self) -> None:
        db = sqlite3.connect(self.store.path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # no fsync per commit: a killed process loses nothing committed
        steps: list[tuple] = []  # step scalars not committed yet
        due = math.inf  # when they must be
        try:
            while True:
                try:
                    event = self._queue.get(timeout=max(due - time.monotonic(), 0.0) if steps else None)
                except queue.Empty:
                    event = ...  # time to commit the waiting step scalars
                if isinstance(event, StepLogged):
                    if not steps:
                        due = time.monotonic() + self.STEP_DELAY
                    steps += self._rows("step", event)
                    if time.monotonic() < due:
                        continue
                if steps:  # whatever comes next comes after them, in order
                    self._attempt(self._insert_metrics, db, steps)
                    steps = []
                if event is None:
                    break
                if isinstance(event, threading.Event):
                    event.set()
                elif event is not ... and not isinstance(event, StepLogged):
                    self._attempt(self._write, db, event)
        finally:
            db.close()

    def _attempt(self, write: Callable, *args) -> None:
        """Write, or keep the error for the training thread (raised at its next emit or close)."""
        try:
            write(*args)
        except BaseException as error:  # noqa: BLE001 - handed to the training thread
            self._error = error

    def _rows(self, scope: str, event: StepLogged | EpochEnded) -> list[tuple]:
        return [(self.run_id, scope, event.epoch, event.step, k, float(v), event.time) for k, v in event.scalars.items()]

    @staticmethod
    def _insert_metrics(db, rows: list[tuple]) -> None:
        with db:
            db.executemany(
                "INSERT INTO metrics (run_id, scope, epoch, step, key, value, time) VALUES (?, ?, ?, ?, ?, ?, ?)", rows
            )

    def _write(self, db, event: Event) -> None:
        """Any event but StepLogged (whose rows `_write_all` gathers)."""
        if isinstance(event, RunStarted):
            self.store.truncate(self.run_id, event.start_epoch)
            self.store.update_run(
                self.run_id,
                status="running",
                started=time.time(),
                ended=None,
                error=None,
                pid=os.getpid(),
                total_epochs=event.total_epochs,
                steps_per_epoch=event.steps_per_epoch,
                device=event.device,
            )
            self.store.log_event(self.run_id, "started", f"epoch {event.start_epoch} on {event.device}")
        elif isinstance(event, EpochEnded):
            if event.per_sample:  # arrays first: whoever sees the epoch's scalars finds its arrays
                self.store.write_per_sample(self.run_id, event.epoch, event.per_sample, connection=db)
            self._insert_metrics(db, self._rows("epoch", event))
        elif isinstance(event, CheckpointSaved):
            self.store.update_run(self.run_id, connection=db, epoch=event.epoch)
        elif isinstance(event, RunEnded):
            self.store.end_run(self.run_id, event.status, event.error)
