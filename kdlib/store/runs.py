"""The run registry: the SQLite database of a kdlib home (`store.sqlite`, WAL) and RunStore.

Here the schema, the runs (config, status, times, error), their control flags, events and scalar
metrics, the analyses kept beside a run, and forgetting what a resumed run writes again. RunStore
takes its per-sample arrays from kdlib.store.samples and its studies from kdlib.store.studies.
Readers open their own connection per call, so they work from any process or thread while a
writer is running.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pandas as pd

from kdlib.paths import kdlib_home, temporary_beside
from kdlib.store.samples import PerSampleArrays, epoch_of
from kdlib.store.studies import StudyTrials

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


class RunStore(PerSampleArrays, StudyTrials):
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

        from kdlib.validation import config_from

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

    # --- analyses and resuming ---------------------------------------------------------------

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
            if epoch_of(entry) >= from_epoch:
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
