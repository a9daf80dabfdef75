"""Tune while it trains: a slider for each of a running run's params that take a schedule and for its lr, and
Apply, which asks the run to take the new values from its next logged step (kdlib.tuning, RunHandle.set)."""

from __future__ import annotations

import math

import streamlit as st

from kdlib.runner import RunHandle
from kdlib.tuning import LR, TUNABLE_STATUSES, TuningRefused, slider_range


def tuning_panel(run: RunHandle, status: str) -> None:
    """A toggle under a running or paused run's controls that opens a row of sliders; nothing for other runs.

    A toggle, not an expander: its state is the session's, so the panel's once-a-second redraw keeps it open."""
    if status not in TUNABLE_STATUSES:
        return
    spec, now = run.store.tunables(run.run_id), run.store.tuned_values(run.run_id)
    if not spec["tunable"]:
        return
    if st.toggle("Tune while it trains", key=f"tune-{run.run_id}-open",
                 help="change the method's coefficients or the lr of this run while it trains"):
        columns = st.columns(min(len(spec["tunable"]), 4))
        sliders = {
            path: _slider(columns[i % len(columns)], run.run_id, path, bounds, now[path])
            for i, (path, bounds) in enumerate(spec["tunable"].items())
        }
        # only what the user moved: a slider redrawn under its hand (its range follows the run) asks nothing
        touched = st.session_state.setdefault(f"tune-{run.run_id}-touched", set())
        asked = {path: chosen for path, (chosen, start) in sliders.items()
                 if path in touched and not math.isclose(chosen, start)}
        if st.button("Apply", key=f"tune-{run.run_id}-apply", disabled=not asked,
                     help="the run takes the new values from its next logged step; its config keeps them there, so a "
                     "resume or its exported YAML does the same"):
            try:
                values = run.set(asked)
            except TuningRefused as error:
                st.error(str(error))
            else:
                touched.clear()
                st.toast("asked: " + ", ".join(f"{path} = {value:g}" for path, value in values.items()))


def _slider(column, run_id: str, path: str, bounds: dict, value: float) -> tuple[float, float]:
    """A slider (for the lr, a number: its scale spans decades) that starts at the run's value now and follows it
    (a schedule moves) until the user moves it; returns its value and where it started."""
    key, was = f"tune-{run_id}-{path}", f"tune-{run_id}-{path}-was"
    low, high = (0.0, math.inf) if path == LR else slider_range(bounds, value)
    start = min(max(value, low), high)
    state = st.session_state
    if key not in state or (state[was] != start and state[key] == state[was]):
        state[key] = start
    state[was] = start
    touch = {"key": key, "on_change": _touch, "args": (run_id, path)}
    if path == LR:
        # a number box: a select_slider over 1-2-5 choices was reset to its first choice by the panel's redraws
        return column.number_input("lr", min_value=0.0, step=float(f"{value / 10:.1g}") or 1e-4, format="%.3g",
                                   help="the base learning rate, which the lr schedule goes on scaling", **touch), start
    state[key] = min(max(state[key], low), high)  # the slider's ends follow the value
    return column.slider(path.removeprefix("method."), low, high, step=(high - low) / 200, format="%.3g", **touch), start


def _touch(run_id: str, path: str) -> None:
    st.session_state.setdefault(f"tune-{run_id}-touched", set()).add(path)
