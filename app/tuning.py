"""Tune while it trains: a slider for each of a running run's params that take a schedule and for its lr, and
Apply, which asks the run to take the new values from its next logged step (kdlib.tuning, RunHandle.set)."""

from __future__ import annotations

import math

import streamlit as st

from kdlib.runner import RunHandle
from kdlib.tuning import LR, TUNABLE_STATUSES, TuningRefused, lr_choices, slider_range


def tuning_panel(run: RunHandle, status: str) -> None:
    """A compact expander under a running or paused run's controls; nothing for other runs."""
    if status not in TUNABLE_STATUSES:
        return
    spec, now = run.store.tunables(run.run_id), run.store.tuned_values(run.run_id)
    if not spec["tunable"]:
        return
    with st.expander("Tune while it trains"):
        columns = st.columns(min(len(spec["tunable"]), 4))
        sliders = {
            path: _slider(columns[i % len(columns)], run.run_id, path, bounds, now[path])
            for i, (path, bounds) in enumerate(spec["tunable"].items())
        }
        asked = {path: chosen for path, (chosen, start) in sliders.items() if not math.isclose(chosen, start)}
        if st.button("Apply", key=f"tune-{run.run_id}-apply", disabled=not asked,
                     help="the run takes the new values from its next logged step; its config keeps them there, so a "
                     "resume or its exported YAML does the same"):
            try:
                values = run.set(asked)
            except TuningRefused as error:
                st.error(str(error))
            else:
                st.toast("asked: " + ", ".join(f"{path} = {value:g}" for path, value in values.items()))


def _slider(column, run_id: str, path: str, bounds: dict, value: float) -> tuple[float, float]:
    """A slider that starts at the run's value now and follows it (a schedule moves) until the user moves it;
    returns its value and where it started."""
    key, was = f"tune-{run_id}-{path}", f"tune-{run_id}-{path}-was"
    options = lr_choices(value) if path == LR else None
    if options is not None:
        start = min(options, key=lambda option: abs(math.log(option / value)))
    else:
        low, high = slider_range(bounds, value)
        start = min(max(value, low), high)
    state = st.session_state
    if key not in state or (state[was] != start and state[key] == state[was]):
        state[key] = start
    state[was] = start
    if options is not None and state[key] not in options:
        state[key] = start  # the options moved with the value: a choice left off them goes
    elif options is None:
        state[key] = min(max(state[key], low), high)  # so did the slider's ends
    if options is not None:
        chosen = column.select_slider("lr", options, key=key, format_func=lambda v: f"{v:.3g}",
                                      help="the base learning rate, which the lr schedule goes on scaling")
    else:
        chosen = column.slider(path.removeprefix("method."), low, high, key=key, step=(high - low) / 200, format="%.3g")
    return chosen, start
