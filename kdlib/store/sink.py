"""StoreSink: the writer thread that puts one run's events into its RunStore, in order.

The trainer emits and goes on; the thread writes per-sample arrays, scalars and the run's status
through one connection of its own, and commits step scalars in batches.
"""

from __future__ import annotations

import math
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable

from kdlib.events import CheckpointSaved, EpochEnded, Event, ParamsChanged, RunEnded, RunStarted, StepLogged
from kdlib.store.runs import RunStore


class StoreSink:
    """Writes one run's events into the store from a background thread, in the order they came.

    Writing per-sample arrays and scalars overlaps the next steps of training; `close()` returns
    once everything is written. An error in the writer is raised at the next `emit` or `close`.
    Step scalars that come faster than `STEP_DELAY` apart are committed together, at most that much
    later (a commit each costs the training process's cores more than the rows themselves); a step
    that comes after a quieter spell (the run's first among them) is committed at once.
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
        due, committed = math.inf, -math.inf  # when they must be; when the last ones were
        try:
            while True:
                try:
                    event = self._queue.get(timeout=max(due - time.monotonic(), 0.0) if steps else None)
                except queue.Empty:
                    event = ...  # time to commit the waiting step scalars
                if isinstance(event, StepLogged):
                    if not steps:
                        due = max(time.monotonic(), committed + self.STEP_DELAY)
                    steps += self._rows("step", event)
                    if time.monotonic() < due:
                        continue
                if steps:  # whatever comes next comes after them, in order
                    self._attempt(self._insert_metrics, db, steps)
                    steps, committed = [], time.monotonic()
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
        elif isinstance(event, ParamsChanged):
            self.store.record_changes(self.run_id, event, connection=db)
        elif isinstance(event, RunEnded):
            self.store.end_run(self.run_id, event.status, event.error)
            if event.status == "done":
                self.store.drop_pending_changes(self.run_id)
