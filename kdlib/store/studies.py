"""RunStore's record of studies: hyperparameter sweeps (kdlib.sweep), one run per trial.

The `study_trials` table says which run is which trial of which study, with the params it was
given, its state and its value. Mixed into RunStore (kdlib.store.runs), whose `_connect` it uses.
`study_summary` and `best_trial` read a study's outcomes from the store alone.
"""

from __future__ import annotations

import json

import pandas as pd


class StudyTrials:
    """The studies of a store and their trials."""

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

    def study_trial_of(self, run_id: str) -> dict | None:
        """The study, trial number and state of run `run_id` if it is a trial of a study, else None."""
        with self._connect() as db:
            row = db.execute("SELECT study, trial, state FROM study_trials WHERE run_id = ?", (run_id,)).fetchone()
        return dict(row) if row else None

    def studies(self) -> list[str]:
        """The studies with trials in this store, the one with the newest trial first."""
        with self._connect() as db:
            rows = db.execute("SELECT study FROM study_trials GROUP BY study ORDER BY MAX(rowid) DESC").fetchall()
        return [row["study"] for row in rows]

    def study_trials(self, study: str) -> pd.DataFrame:
        """One row per trial of `study` whose run is in this store: trial, run_id, name, state, value, status
        (the run's), metric, direction, then one column per searched param (a config path)."""
        self.check_processes()  # a trial whose process died shows failed, not running
        query = (
            "SELECT s.trial, s.run_id, r.name, s.state, s.value, r.status, s.metric, s.direction, s.params "
            "FROM study_trials s JOIN runs r ON r.id = s.run_id WHERE s.study = ? ORDER BY s.trial"
        )
        with self._connect() as db:
            frame = pd.read_sql_query(query, db, params=(study,))
        return frame.join(pd.DataFrame([json.loads(p) for p in frame.pop("params")], index=frame.index))


# A study's outcomes read from the store alone (no torch), so `kdlib study` starts at once.
STUDY_OUTCOMES = {"val.acc": "val_acc", "test.acc": "test_acc", "test.nll": "test_nll", "test.ece": "test_ece"}


def study_summary(store, study: str) -> pd.DataFrame:
    """`RunStore.study_trials` (trial, run_id, name, state, value, status, metric, direction, one column per
    searched param) with each run's epochs done and its last epoch's val/test accuracy, test NLL and ECE."""
    trials = store.study_trials(study)
    finals = []
    for run_id in trials.run_id:
        epochs = store.epoch_metrics(run_id)
        last = epochs.iloc[-1] if len(epochs) else pd.Series(dtype=float)
        finals.append({"epochs_done": len(epochs), **{n: last.get(k, float("nan")) for k, n in STUDY_OUTCOMES.items()}})
    return trials.join(pd.DataFrame(finals, index=trials.index, columns=["epochs_done", *STUDY_OUTCOMES.values()]))


def best_trial(trials: pd.DataFrame) -> pd.Series | None:
    """The complete trial with the best value in the study's direction; None before one completes."""
    complete = trials[trials.state == "complete"].dropna(subset=["value"])
    if complete.empty:
        return None
    values = complete.value.astype(float)
    return complete.loc[values.idxmax() if complete.direction.iloc[0] == "maximize" else values.idxmin()]
