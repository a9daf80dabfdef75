"""The run registry: the SQLite database of a kdlib home (`store.sqlite`, WAL) and RunStore.

Here the schema, the runs (config, status, times, error), their control flags, events and scalar
metrics, the analyses kept beside a run, and forgetting what a resumed run writes again. RunStore
takes its per-sample arrays from kdlib.store.samples and its studies from kdlib.store.studies.
Readers open their own connection per call, so they work from any process or thread while a
writer is running.

Liveness: a run records the process that runs it (pid, start time, host). Every read of a queued,
running or paused run checks that process (one small read of /proc per active run), so a run whose
process ended without reporting (killed, out of memory, dead before training) reads `failed`, with
the last lines of its worker.log. A store that cannot be opened or written (a damaged file, a
read-only folder, a full disk) raises StoreError, whose message names the file and what to do.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pandas as pd

from kdlib.paths import home_path, kdlib_home, temporary_beside
from kdlib.store.control import ACTIVE, RunControl
from kdlib.store.samples import PerSampleArrays, epoch_of
from kdlib.store.studies import StudyTrials
from kdlib.store.tuning import TUNING_SCHEMA, RunTuning

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL, method TEXT, config TEXT NOT NULL,
    status TEXT NOT NULL, control TEXT NOT NULL DEFAULT 'run', created REAL NOT NULL, started REAL, ended REAL,
    error TEXT, pid INTEGER, epoch INTEGER, total_epochs INTEGER, steps_per_epoch INTEGER, device TEXT,
    pid_started REAL, host TEXT
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

HOST = socket.gethostname()
# the last epoch whose scalars are recorded: what `show` counts, ahead of the checkpointed `runs.epoch` while it trains
RECORDED_EPOCH = (
    "(SELECT m.epoch FROM metrics m WHERE m.run_id = r.id AND m.scope = 'epoch' ORDER BY m.id DESC LIMIT 1)"
)


class RunNotFound(KeyError):
    def __str__(self) -> str:
        return self.args[0]


class StoreError(RuntimeError):
    """The store cannot be opened or written: a damaged file, a read-only folder or a full disk.

    Its message names the file and says what to do; the CLI and the app show it instead of a traceback.
    `kind`: "damaged", "full", "read-only" or "unreadable"."""

    def __init__(self, message: str, kind: str = "unreadable") -> None:
        super().__init__(message)
        self.kind = kind


class RunStore(PerSampleArrays, StudyTrials, RunControl, RunTuning):
    """Reader and writer of one kdlib home folder."""

    def __init__(self, home: str | os.PathLike | None = None) -> None:
        self.home = home_path(home)
        self.path = self.home / "store.sqlite"
        try:
            kdlib_home(self.home)
        except OSError as error:
            raise store_error(error, self.path) or error from None
        with self._connect() as db:
            db.executescript(SCHEMA + TUNING_SCHEMA)
            _add_column(db, "metrics", "time REAL")  # stores made before metrics had their time
            _add_column(db, "samples", "file TEXT")  # stores made when each array had its own .npy
            _add_column(db, "runs", "pid_started REAL")  # stores made before runs knew their process
            _add_column(db, "runs", "host TEXT")
            _add_column(db, "runs", "phase_of TEXT")  # stores made before a teacher's run named its student

    @contextmanager
    def _connect(self, connection: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """A connection in a transaction: a new one, or `connection` (a writer's own, kept open).

        An error that says the store is damaged, read-only or full becomes a StoreError."""
        try:
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
        except (sqlite3.DatabaseError, OSError) as error:
            if (explained := store_error(error, self.path)) is None:
                raise
            raise explained from error

    def run_dir(self, run_id: str) -> Path:
        return self.home / run_id

    # --- runs -------------------------------------------------------------------------------

    def create_run(self, config, kind: str = "student", name: str | None = None) -> str:
        """Register a run as queued, with its config saved beside it; returns its id."""
        run_id = f"{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
        try:
            self.run_dir(run_id).mkdir(parents=True)
            (self.run_dir(run_id) / "config.yaml").write_text(config.to_yaml())
            self.save_tunables(run_id, config)  # what it may change while it trains (kdlib.tuning)
        except OSError as error:
            shutil.rmtree(self.run_dir(run_id), ignore_errors=True)
            raise store_error(error, self.run_dir(run_id)) or error from None
        with self._connect() as db:
            # the process that registers a run runs it or starts its worker (which then records itself)
            db.execute(
                "INSERT INTO runs (id, name, kind, method, config, status, created, total_epochs, pid, pid_started, "
                "host) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?)",
                (
                    run_id,
                    name or config.run_name(),
                    kind,
                    config.method.name,
                    config.to_yaml(),
                    time.time(),
                    config.epochs,
                    os.getpid(),
                    process_start(os.getpid()),
                    HOST,
                ),
            )
        return run_id

    def run(self, run_id: str) -> dict:
        """A run's row: `epoch` is its last recorded epoch (0-based), `checkpoint_epoch` its last checkpointed one.

        A queued, running or paused run whose process has ended reads (and is recorded) `failed`."""
        with self._connect() as db:
            row = db.execute(
                f"SELECT *, {RECORDED_EPOCH} AS recorded_epoch FROM runs r WHERE id = ?", (run_id,)
            ).fetchone()
        if row is None:
            raise RunNotFound(f"no run {run_id!r} in {self.home}; `python -m kdlib ls` lists the runs")
        run = dict(row)
        run.update(checkpoint_epoch=run["epoch"], epoch=run.pop("recorded_epoch"))
        run.update(self._reconciled(run) or {})
        return run

    def runs(self, kind: str | None = None) -> pd.DataFrame:
        """Every run, newest first, with its last epoch's test accuracy when it has one; live runs checked as in run()."""
        query = (
            f"SELECT r.id, r.name, r.kind, r.method, r.status, {RECORDED_EPOCH} AS epoch, r.total_epochs, r.created, "
            "r.started, r.ended, r.error, (SELECT value FROM metrics m WHERE m.run_id = r.id AND m.key = 'test.acc' "
            "ORDER BY m.id DESC LIMIT 1) AS test_acc, r.pid, r.pid_started, r.host FROM runs r"
        )
        with self._connect() as db:
            frame = pd.read_sql_query(
                query + (" WHERE kind = ?" if kind else "") + " ORDER BY created DESC",
                db,
                params=(kind,) if kind else None,
            )
        for i in frame.index[frame.status.isin(ACTIVE)]:
            if fixed := self._reconciled(frame.loc[i].to_dict()):
                frame.loc[i, list(fixed)] = list(fixed.values())
        frame["epochs_done"] = (frame["epoch"] + 1).fillna(0).astype(int)  # `epoch` is the last finished, 0-based
        return frame.drop(columns=["pid_started", "host"])

    def set_process(self, run_id: str, pid: int | None = None, **fields) -> None:
        """Record the process that runs `run_id` (default: this one), with other fields in the same write."""
        pid = pid or os.getpid()
        self.update_run(run_id, pid=pid, pid_started=process_start(pid), host=HOST, **fields)

    def check_processes(self) -> None:
        """Record failed every queued, running or paused run whose process has ended without reporting
        (for a reader that reads `runs` in its own query, as a study's trials do)."""
        with self._connect() as db:
            active = db.execute("SELECT * FROM runs WHERE status IN (?, ?, ?)", ACTIVE).fetchall()
        for run in active:
            self._reconciled(dict(run))

    def _reconciled(self, run: dict) -> dict | None:
        """For an active run whose process has ended: its status, error and end as now recorded (failed)."""
        pid, started = run["pid"], run["pid_started"]
        if run["status"] not in ACTIVE or pd.isna(pid) or run["host"] not in (None, HOST):
            return None  # no process recorded (an older store), or one on another machine
        now = process_start(int(pid))
        if now is not None and (pd.isna(started) or now == started):
            return None
        log = self.run_dir(run["id"]) / "worker.log"
        error = (
            f"{ENDED_WITHOUT_REPORTING} (pid {int(pid)}); `python -m kdlib resume {run['id']}` continues it from its "
            "last checkpoint"
        )
        if tail := _tail(log):
            error += f". The last lines of {log}:\n{tail}"
        elif log.exists():
            error += f"; it printed nothing to {log}"
        fixed = {"status": "failed", "error": error, "ended": time.time()}
        try:
            with self._connect() as db:
                # only if nothing changed since it was read: the run may have ended, or been resumed, meanwhile
                changed = db.execute(
                    "UPDATE runs SET status = ?, error = ?, ended = ? WHERE id = ? AND status IN (?, ?, ?) "
                    "AND pid = ? AND pid_started IS ?",
                    (*fixed.values(), run["id"], *ACTIVE, int(pid), None if pd.isna(started) else started),
                ).rowcount
                if changed:
                    db.execute(
                        "INSERT INTO events (run_id, time, kind, message) VALUES (?, ?, 'failed', ?)",
                        (run["id"], fixed["ended"], error),
                    )
                else:
                    fixed = dict(
                        db.execute("SELECT status, error, ended FROM runs WHERE id = ?", (run["id"],)).fetchone()
                    )
        except StoreError:  # a read-only or full store: the run reads failed all the same
            pass
        return fixed

    def latest_run_id(self, kind: str | None = "student") -> str:
        frame = self.runs(kind)
        if frame.empty:
            raise RunNotFound(f"no runs in {self.home} yet; start one with `python -m kdlib run CONFIG`")
        return frame.id.iloc[0]

    def config(self, run_id: str):
        import yaml

        from kdlib.validation import config_from

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's where PyYAML has it: 10 times faster
        # checked when it was created: not at the door again
        return config_from(yaml.load(self.run(run_id)["config"], Loader=loader), door=False)  # noqa: S506

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
            for table, column in (("metrics", "run_id"), ("events", "run_id"), ("samples", "run_id"), ("tuning", "run_id"),
                              ("runs", "id")):
                db.execute(f"DELETE FROM {table} WHERE {column} = ?", (run_id,))
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)

    # --- events ----------------------------------------------------------------------------

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

    def discard_temporaries(self, run_id: str) -> None:
        """Remove what a failed write left in a run's folder (a checkpoint or epoch file under a temporary
        name): called once its writers have stopped, it also gives their space back on a full disk."""
        for stale in self.run_dir(run_id).rglob("*.tmp"):
            stale.unlink(missing_ok=True)

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


ENDED_WITHOUT_REPORTING = "the process ended without reporting"
_PROC = os.path.exists("/proc/self/stat")


def process_start(pid: int) -> float | None:
    """When process `pid` started, or None if it has ended (a zombie nobody waited for has ended too).

    With the pid it names one process: a pid handed out again later has another start. Linux: field 22
    of /proc/<pid>/stat (clock ticks after boot); elsewhere psutil's create_time, else 0.0 while the pid
    answers a signal (the pid alone, then)."""
    if _PROC:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                state, *fields = stat.read().rsplit(b")", 1)[1].split()  # the name in (...) may hold spaces
        except OSError:
            return None
        return None if state in (b"Z", b"X") else float(fields[18])
    try:
        import psutil
    except ImportError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0.0
    try:
        process = psutil.Process(pid)
        return None if process.status() == psutil.STATUS_ZOMBIE else process.create_time()
    except psutil.Error:
        return None


def _tail(path: Path, lines: int = 10, size: int = 4000) -> str:
    """The last lines of a text file (at most `size` characters), or "" if there is none."""
    try:
        with open(path, "rb") as file:
            file.seek(max(file.seek(0, os.SEEK_END) - size, 0))
            text = file.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def store_error(error: BaseException, path: Path) -> StoreError | None:
    """What a failed open, read or write of the store at `path` means, and what to do; None for other errors."""
    text, home, code = str(error), path.parent, getattr(error, "errno", None)
    if "not a database" in text or "malformed" in text:
        return StoreError(
            f"{path} is damaged ({text}). Move it aside (`mv {path} {path}.damaged`) and kdlib starts an empty store "
            f"there (the run folders in {home} stay on disk but are no longer listed), or use another home "
            "(KDLIB_HOME or --home)",
            "damaged",
        )
    # SQLite says "disk I/O error" when it cannot grow the files beside the database (-wal, -shm) on a full disk
    if code in (errno.ENOSPC, errno.EDQUOT) or "disk is full" in text or ("I/O error" in text and _nearly_full(home)):
        return StoreError(
            f"{path}: the disk is full ({text}). Free space on it (`df -h {home}` shows how much is left), then "
            "`python -m kdlib resume RUN` continues a run that failed for it",
            "full",
        )
    if code in (errno.EROFS, errno.EACCES, errno.EPERM) or "readonly" in text or "unable to open" in text:
        if code == errno.EROFS or _read_only_disk(home):
            why = "is on a read-only file system"
        elif home.is_dir() and not os.access(home, os.W_OK):
            why = "is in a read-only folder"
        else:
            why = "cannot be opened or written"
        return StoreError(
            f"{path} {why} ({text}). Make {home} writable, or keep runs elsewhere: set KDLIB_HOME or pass --home "
            "with a folder you can write",
            "read-only",
        )
    if "I/O error" in text:
        return StoreError(f"{path} cannot be read or written ({text}); check the disk it is on", "unreadable")
    return None


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        return False


def _read_only_disk(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def _add_column(db: sqlite3.Connection, table: str, column: str) -> None:
    if column.split()[0] not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
        try:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
        except sqlite3.OperationalError as error:  # another process added it first
            if "duplicate column" not in str(error):
                raise
