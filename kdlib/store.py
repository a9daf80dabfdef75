"""RunStore: where runs write what they learn and where every view reads it.

One SQLite file in WAL mode (`$KDLIB_HOME/store.sqlite`, default `./runs`) holds the runs (config,
status, times, error, control flag), their scalar metrics and their events; a folder per run holds
per-sample arrays (one `.npy` per split, key and epoch, written to a temporary folder and renamed,
so a reader never sees half an epoch), checkpoints and route weights. Readers open their own
connection per call, so they work from any process or thread while a writer is running.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from kdlib.events import CheckpointSaved, EpochEnded, Event, RunEnded, RunStarted, StepLogged
from kdlib.paths import kdlib_home

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
    epoch INTEGER NOT NULL, step INTEGER NOT NULL, key TEXT NOT NULL, value REAL
);
CREATE INDEX IF NOT EXISTS metrics_by_run ON metrics (run_id, id);
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

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
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

    def update_run(self, run_id: str, **fields) -> None:
        columns = ", ".join(f"{k} = ?" for k in fields)
        with self._connect() as db:
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
            for table, column in (("metrics", "run_id"), ("events", "run_id"), ("runs", "id")):
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
        """Scalars in long form (id, scope, epoch, step, key, value); `since_id` follows a live run."""
        query = "SELECT id, scope, epoch, step, key, value FROM metrics WHERE run_id = ? AND id > ?"
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

    def per_sample_epochs(self, run_id: str) -> list[int]:
        folder = self.samples_dir(run_id)
        if not folder.exists():
            return []
        return sorted(int(p.name.split("_")[1]) for p in folder.glob("epoch_*") if not p.name.endswith(".tmp"))

    def per_sample(self, run_id: str, epoch: int, split: str = "train") -> dict[str, np.ndarray]:
        """The per-sample arrays of one epoch, by key; values are indexed by dataset index."""
        folder = self.samples_dir(run_id) / f"epoch_{epoch:04d}"
        if not folder.exists():
            raise KeyError(
                f"run {run_id} has no per-sample values for epoch {epoch}; "
                f"it has epochs {self.per_sample_epochs(run_id)}"
            )
        return {p.stem.split(".", 1)[1]: np.load(p, mmap_mode="r") for p in sorted(folder.glob(f"{split}.*.npy"))}

    def trajectory(self, run_id: str, key: str, index: int, split: str = "train") -> pd.Series:
        """One sample's value of `key` at every recorded epoch."""
        values = {}
        for epoch in self.per_sample_epochs(run_id):
            path = self.samples_dir(run_id) / f"epoch_{epoch:04d}" / f"{split}.{key}.npy"
            if path.exists():
                values[epoch] = float(np.load(path, mmap_mode="r")[index])
        return pd.Series(values, name=key, dtype=float).rename_axis("epoch")

    def write_per_sample(self, run_id: str, epoch: int, arrays: dict[str, np.ndarray]) -> None:
        final = self.samples_dir(run_id) / f"epoch_{epoch:04d}"
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for key, values in arrays.items():
            np.save(tmp / f"{key}.npy", compact(values))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)

    def save_analysis(self, run_id: str, name: str, frame: pd.DataFrame) -> pd.DataFrame:
        """Keep an analysis of a run (a frame) beside it; `analysis(run_id, name)` reads it back."""
        folder = self.run_dir(run_id) / "analysis"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{name}.tmp.csv"
        frame.to_csv(tmp)
        tmp.replace(folder / f"{name}.csv")
        return frame

    def analysis(self, run_id: str, name: str) -> pd.DataFrame:
        return pd.read_csv(self.run_dir(run_id) / "analysis" / f"{name}.csv", index_col=0)

    def analyses(self, run_id: str) -> list[str]:
        folder = self.run_dir(run_id) / "analysis"
        return sorted(p.name.removesuffix(".csv") for p in folder.glob("*.csv") if ".tmp" not in p.name)

    def truncate(self, run_id: str, from_epoch: int) -> None:
        """Forget what a run wrote for `from_epoch` on: a resumed run writes it again."""
        with self._connect() as db:
            # from epoch 0 the run starts over, its preparation phase (epoch -1) included
            db.execute("DELETE FROM metrics WHERE run_id = ? AND epoch >= ?", (run_id, from_epoch if from_epoch else -1))
        for epoch in self.per_sample_epochs(run_id):
            if epoch >= from_epoch:
                shutil.rmtree(self.samples_dir(run_id) / f"epoch_{epoch:04d}")


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
    """

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

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"writing run {self.run_id} to the store failed: {error}") from error

    def _write_all(self) -> None:
        db = sqlite3.connect(self.store.path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        try:
            while (event := self._queue.get()) is not None:
                try:
                    self._write(db, event)
                except BaseException as error:  # noqa: BLE001 - handed to the training thread
                    self._error = error
        finally:
            db.close()

    def _scalars(self, db, scope: str, epoch: int, step: int, scalars: dict[str, float]) -> None:
        with db:
            db.executemany(
                "INSERT INTO metrics (run_id, scope, epoch, step, key, value) VALUES (?, ?, ?, ?, ?, ?)",
                [(self.run_id, scope, epoch, step, k, float(v)) for k, v in scalars.items()],
            )

    def _write(self, db, event: Event) -> None:
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
        elif isinstance(event, StepLogged):
            self._scalars(db, "step", event.epoch, event.step, event.scalars)
        elif isinstance(event, EpochEnded):
            if event.per_sample:  # arrays first: whoever sees the epoch's scalars finds its arrays
                self.store.write_per_sample(self.run_id, event.epoch, event.per_sample)
            self._scalars(db, "epoch", event.epoch, event.step, event.scalars)
        elif isinstance(event, CheckpointSaved):
            self.store.update_run(self.run_id, epoch=event.epoch)
        elif isinstance(event, RunEnded):
            self.store.end_run(self.run_id, event.status, event.error)
