"""Sweeps: a study's trials side by side: their params, values and curves, pruned trials marked."""

from __future__ import annotations

import streamlit as st

from app.common import escape, link, query_param
from app.common import store as open_store
from kdlib import viz
from kdlib.store import ACTIVE
from kdlib.views import STUDY_OUTCOMES, best_trial, searched_params, study_curves, study_summary

STUDY_OUTCOMES_BY_COLUMN = {column: metric for metric, column in STUDY_OUTCOMES.items()}

store = open_store()
st.title("Sweeps")
st.caption(
    "A sweep is an Optuna study whose trials are ordinary runs: `python -m kdlib sweep CONFIG --search "
    "temperature=log:1:16 --trials 20`. A trial's value is its metric at its last epoch; a pruned trial stopped "
    "early because its metric was worse than the median of earlier trials at the same epoch."
)
studies = store.studies()
if not studies:
    st.info(
        "No sweeps in the store yet. Start one from the command line: "
        "`python -m kdlib sweep configs/toy2d_kd.yaml --search temperature=log:1:16 --trials 10`."
    )
    st.stop()

wanted = query_param("study", studies[0], options=studies)
study = st.selectbox("study", studies, index=studies.index(wanted), key="sweeps-study")
st.query_params["study"] = study
active = bool(store.study_trials(study).status.isin(ACTIVE).any())


@st.fragment(run_every="2s" if active else None)
def trials_view() -> None:
    trials = study_summary(store, study)
    if trials.empty:
        st.info(f"The runs of study {escape(study)} are no longer in the store.")
        return
    metric, direction, params = trials.metric.iloc[0], trials.direction.iloc[0], searched_params(trials)
    best = best_trial(trials)
    counts = trials.state.value_counts()
    st.markdown(
        f"**{len(trials)} trials** ({', '.join(f'{n} {s}' for s, n in counts.items())}), {direction} {escape(metric)}"
        + (f"; best: trial {best.trial}, {escape(metric)} = {best.value:.4f}" if best is not None else "")
    )
    # the final metrics, less the one that is the trial's value already
    finals = [c for c in ("val_acc", "test_acc", "test_ece") if STUDY_OUTCOMES_BY_COLUMN[c] != metric]
    st.dataframe(
        trials[["trial", "state", "value", *params, "status", "epochs_done", *finals, "run_id"]],
        hide_index=True,
        width="stretch",
        column_config={"value": st.column_config.NumberColumn(metric, format="%.4f")},
    )
    st.plotly_chart(viz.study_params_figure(trials, params, title=f"{metric} against each param"), key="study-params")
    if len(params) > 1:
        shown = trials.dropna(subset=["value"])[[*params, "value"]].rename(columns={"value": metric})
        st.plotly_chart(viz.parallel_coordinates_figure(shown, color=metric), key="study-parallel")
    curves = study_curves(store, trials)
    metrics = sorted({c for frame in curves.values() for c in frame.columns if c != "step"})
    shown_metric = st.selectbox(
        "curves of", metrics or [metric], index=metrics.index(metric) if metric in metrics else 0, key="sweeps-metric"
    )
    pruned = [f"trial {t}" for t in trials.trial[trials.state == "pruned"]]
    st.plotly_chart(
        viz.study_curves_figure(curves, shown_metric, pruned, title="each trial by epoch (pruned: dashed)"),
        key="study-curves",
    )
    link("runs", "Compare these runs in Runs & compare", runs=",".join(trials.run_id))
    if active and not trials.status.isin(ACTIVE).any():
        st.rerun()  # the last trial ended: redraw once, and stop refreshing


trials_view()
