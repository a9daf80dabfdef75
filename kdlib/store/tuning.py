"""RunStore's changes made while a run trains (kdlib.tuning): requested, picked up, applied, kept.

The `tuning` table holds every change asked of a run: its field and value, when it was asked, and once
the run applied it, where (the epoch, the step within it, the global step). A request is checked
before it is written (`request_changes`); the run's control reads the pending ones at its logged
steps (`pending_changes`, one small query); the run's store sink records where they took effect
(`record_changes`), changing the run's stored config (the `config` row and config.yaml) in the same
write, so that a resumed run and an exported config reproduce them. Mixed into RunStore
(kdlib.store.runs), whose `_connect`, `run` and `run_dir` it uses. kdlib.tuning (pydantic) is imported
by the methods that need it, so that commands that only read the store import none of it.
"""

from __future__ import annotations

import json
import time

import pandas as pd
import yaml

from kdlib.paths import temporary_beside

TUNING_SCHEMA = """
CREATE TABLE IF NOT EXISTS tuning (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, requested REAL NOT NULL, path TEXT NOT NULL,
    value REAL NOT NULL, state TEXT NOT NULL DEFAULT 'pending', epoch INTEGER, epoch_step INTEGER, step INTEGER,
    applied REAL
);
CREATE INDEX IF NOT EXISTS tuning_by_run ON tuning (run_id, state);
"""
TUNABLE_FILE = "tunable.json"


class RunTuning:
    """Changes asked of the runs of a store while they train."""

    def save_tunables(self, run_id: str, config) -> None:
        """Record what the run may tune, with the bounds, so that a request is checked without its method's code."""
        from kdlib.tuning import tunables

        (self.run_dir(run_id) / TUNABLE_FILE).write_text(json.dumps(tunables(config), indent=1))

    def tunables(self, run_id: str) -> dict:
        """{"tunable": {path: bounds}, "fixed": {path: why not}} of a run (kdlib.tuning.tunables)."""
        path = self.run_dir(run_id) / TUNABLE_FILE
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):  # a run made before runs recorded it: read from its method (imports torch)
            from kdlib.tuning import tunables

            return tunables(self.config(run_id))

    def request_changes(self, run_id: str, changes: dict) -> dict[str, float]:
        """Ask a running or paused run to change fields ({path: value}) from its next step; returns the values.

        Every change is checked first (kdlib.tuning.TuningRefused names each problem) and nothing is written
        unless all pass."""
        from kdlib.tuning import check_changes

        values = check_changes(self.tunables(run_id), self.run(run_id)["status"], run_id, changes)
        now = time.time()
        text = ", ".join(f"{path}={value:g}" for path, value in values.items())
        with self._connect() as db:
            db.executemany("INSERT INTO tuning (run_id, requested, path, value) VALUES (?, ?, ?, ?)",
                           [(run_id, now, path, value) for path, value in values.items()])
            db.execute("INSERT INTO events (run_id, time, kind, message) VALUES (?, ?, 'set', ?)",
                       (run_id, now, f"asked: {text}"))
        return values

    def pending_changes(self, run_id: str) -> list[dict]:
        """The changes asked of a run that it has not applied yet, oldest first: [{id, path, value}]."""
        with self._connect() as db:
            rows = db.execute("SELECT id, path, value FROM tuning WHERE run_id = ? AND state = 'pending' ORDER BY id",
                              (run_id,)).fetchall()
        return [dict(row) for row in rows]

    def record_changes(self, run_id: str, event, connection=None) -> None:
        """A run applied changes (an `events.ParamsChanged`): its stored config gets them at their step, and
        the requests are marked applied, in one write."""
        from kdlib.tuning import changed_config

        run = self.run(run_id)
        config = changed_config(yaml.safe_load(run["config"]), event.values, event.epoch, event.epoch_step)
        text = yaml.safe_dump(config, sort_keys=False)
        file = self.run_dir(run_id) / "config.yaml"
        tmp = temporary_beside(file)
        tmp.write_text(text)
        where = f"epoch {event.epoch}, step {event.epoch_step} of it (step {event.step})"
        message = ", ".join(f"{path}={value:g}" for path, value in event.values.items()) + f" from {where}"
        with self._connect(connection) as db:
            db.execute("UPDATE runs SET config = ? WHERE id = ?", (text, run_id))
            db.executemany(
                "UPDATE tuning SET state = 'applied', epoch = ?, epoch_step = ?, step = ?, applied = ? WHERE id = ?",
                [(event.epoch, event.epoch_step, event.step, event.time, request) for request in event.requests],
            )
            db.execute("INSERT INTO events (run_id, time, kind, message) VALUES (?, ?, 'changed', ?)",
                       (run_id, event.time, message))
        tmp.replace(file)

    def tuned_values(self, run_id: str) -> dict[str, float]:
        """The value of every tunable field where the run is now (its last logged step), from its stored config."""
        from kdlib.tuning import current_values

        run = self.run(run_id)
        with self._connect() as db:
            row = db.execute("SELECT step FROM metrics WHERE run_id = ? AND epoch >= 0 ORDER BY id DESC LIMIT 1",
                             (run_id,)).fetchone()
        per_epoch = run["steps_per_epoch"] or 0
        epoch, epoch_step = divmod(row["step"], per_epoch) if row and per_epoch else (0, 0)  # the next step's place
        return current_values(yaml.safe_load(run["config"]), self.tunables(run_id), epoch, epoch_step)

    def drop_pending_changes(self, run_id: str) -> None:
        """A run that ended done never applies the changes it had not reached: they read `dropped`."""
        with self._connect() as db:
            db.execute("UPDATE tuning SET state = 'dropped' WHERE run_id = ? AND state = 'pending'", (run_id,))

    def changes(self, run_id: str) -> pd.DataFrame:
        """Every change asked of a run, oldest first: id, path, value, state (pending, applied, dropped), the
        time asked and applied, and where it took effect (epoch, epoch_step, global step)."""
        with self._connect() as db:
            return pd.read_sql_query(
                "SELECT id, path, value, state, requested, applied, epoch, epoch_step, step FROM tuning "
                "WHERE run_id = ? ORDER BY id", db, params=(run_id,))


__all__ = ["TUNABLE_FILE", "TUNING_SCHEMA", "RunTuning"]
