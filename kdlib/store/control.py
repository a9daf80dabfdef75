"""RunStore's control of runs: pause, resume and stop flags, runs bound together, and what a run allows now.

A run obeys its `control` flag at its next logged step (kdlib.runner.StoreControl). A teacher trained
for a student is a phase of the student's run (its `phase_of` names the student): while the phase
lasts, a request to either row applies to both, so a paused pair shows paused on both rows and
resumes from either, and a student stopped while its teacher trains stops the teacher too, which the
student continues when it is resumed (kdlib.teachers). `actions(run_id)` says which of pause, resume
and stop a run allows now, and why not; the app, the widgets, the CLI and RunHandle all ask it.
Mixed into RunStore (kdlib.store.runs), whose `_connect`, `run` and `study_trial_of` it uses.
"""

from __future__ import annotations

import time

ACTIONS = ("pause", "resume", "stop")
ACTIVE = ("queued", "running", "paused")
_FLAG = {"pause": "pause", "resume": "run", "stop": "stop"}


class ControlRefused(ValueError):
    """An action the run does not allow now; the message says why."""


class RunControl:
    """Control flags of the runs of a store."""

    def request(self, run_id: str, action: str) -> None:
        """Ask a run (and the runs bound to it) to pause, resume or stop; it obeys at its next logged step."""
        flag = _FLAG[action]
        self.run(run_id)  # an unknown run is an error that names it
        now = time.time()
        with self._connect() as db:
            for rid in (run_id, *self.bound_runs(run_id, db)):
                db.execute("UPDATE runs SET control = ? WHERE id = ?", (flag, rid))
                db.execute("INSERT INTO events (run_id, time, kind, message) VALUES (?, ?, 'control', ?)",
                           (rid, now, action))

    def control(self, run_id: str) -> str:
        with self._connect() as db:
            row = db.execute("SELECT control FROM runs WHERE id = ?", (run_id,)).fetchone()
        return row["control"] if row else "stop"

    def bound_runs(self, run_id: str, connection=None) -> list[str]:
        """The active runs bound to `run_id` now: the student it is a phase of, and its own active phases."""
        marks = ", ".join("?" * len(ACTIVE))
        with self._connect(connection) as db:
            rows = db.execute(
                f"SELECT id FROM runs WHERE status IN ({marks}) AND (id = (SELECT phase_of FROM runs WHERE id = ?) "
                "OR phase_of = ?)",
                (*ACTIVE, run_id, run_id),
            ).fetchall()
        return [row["id"] for row in rows if row["id"] != run_id]

    def phase_parent(self, run_id: str) -> str | None:
        """The run `run_id` was a phase of (a student whose teacher it trained), if that run is still stored."""
        with self._connect() as db:
            row = db.execute("SELECT p.id FROM runs r JOIN runs p ON p.id = r.phase_of WHERE r.id = ?",
                             (run_id,)).fetchone()
        return row["id"] if row else None

    def actions(self, run_id: str) -> dict[str, str | None]:
        """For each of pause, resume and stop: None if the run allows it now, else the reason it does not."""
        status = self.run(run_id)["status"]
        ended = f"it has ended ({status})"
        pause = None if status in ("queued", "running") else "it is paused" if status == "paused" else ended
        stop = None if status in ACTIVE else ended
        if status == "paused" or status in ("stopped", "failed") and (trial := self.study_trial_of(run_id)) is None:
            resume = None
        elif status in ("stopped", "failed"):
            resume = (f"it is trial {trial['trial']} of the sweep {trial['study']!r}, which recorded it as "
                      f"{trial['state']}; run the sweep again for more trials")
        else:
            resume = {"done": "it is done", "queued": "it has not started yet"}.get(status, "it is running")
        return {"pause": pause, "resume": resume, "stop": stop}

    def refuse_unless_allowed(self, run_id: str, action: str) -> None:
        """Raise ControlRefused, saying why, if the run does not allow `action` now."""
        if reason := self.actions(run_id)[action]:
            raise ControlRefused(f"run {run_id} cannot {action}: {reason}")
