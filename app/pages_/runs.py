"""Runs & compare: every run in the store, curves overlaid, hyperparameters against results, and housekeeping."""

from __future__ import annotations

from datetime import datetime

import streamlit as st

from app.common import escape, link, pick_run, plain, query_list, query_param, run_label, train_query
from app.common import store as open_store
from kdlib import viz
from kdlib.store import ACTIVE
from kdlib.views import runs_summary

store = open_store()
st.title("Runs & compare")
runs = store.runs(None)
if runs.empty:
    st.info("No runs in the store yet.")
    link("train", "Start one in Train")
    st.stop()

table = runs.assign(created=runs.created.map(datetime.fromtimestamp))
st.dataframe(
    table[["name", "kind", "method", "status", "epochs_done", "total_epochs", "test_acc", "created", "id", "error"]],
    hide_index=True,
    width="stretch",
    column_config={
        "test_acc": st.column_config.NumberColumn("test acc", format="%.3f"),
        "created": st.column_config.DatetimeColumn(format="MM-DD HH:mm"),
    },
)

st.subheader("Compare")
ids = runs.id.tolist()
default = query_list("runs", ids) or runs[runs.kind == "student"].id.head(3).tolist() or ids[:1]
start = {"default": default}
if "runs-compare" in st.session_state:  # keep the widget's own state, less deleted runs
    st.session_state["runs-compare"], start = [i for i in st.session_state["runs-compare"] if i in ids], {}
chosen = st.multiselect("runs to compare", ids, format_func=lambda i: run_label(runs, i), key="runs-compare", **start)
st.query_params["runs"] = ",".join(chosen)
if chosen:
    by_id = runs.set_index("id")
    labels = {i: f"{plain(by_id.name[i])} ({i[-6:]})" for i in chosen}
    curves = {labels[i]: store.epoch_metrics(i) for i in chosen}
    methods = {labels[i]: by_id.method[i] for i in chosen}  # each method in its colour, on every page
    metrics = sorted({c for frame in curves.values() for c in frame.columns if c != "step"})
    metrics = metrics or ["test.acc"]
    wanted_metric = query_param("metric", "test.acc" if "test.acc" in metrics else metrics[0], options=metrics)
    metric = st.selectbox(
        "metric",
        metrics,
        index=metrics.index(wanted_metric),
        key="runs-metric",
        format_func=viz.scalar_label,
        help="any epoch scalar the runs logged: accuracy, loss terms, ECE, the method's coefficients",
    )
    st.query_params["metric"] = metric
    st.plotly_chart(viz.compare_curves_figure(curves, metric, methods=methods), key="compare-curves")

    summary = runs_summary(store, chosen)
    st.markdown("**Hyperparameters against results** (schedules count as their mean over the epochs)")
    st.plotly_chart(viz.parallel_coordinates_figure(summary), key="parallel")
    st.dataframe(summary, hide_index=True, width="stretch")

st.subheader("One run")
run_id = pick_run(runs, "run", key="runs-one")
info = store.run(run_id)
try:
    config = store.config(run_id)
except ValueError as error:  # a config written by an older kdlib that no longer validates
    config = None
    st.warning(f"This run's config no longer validates: {escape(error)}")
cols = st.columns(3)
with cols[0]:
    link("train", "Watch it in Train", run=run_id)
with cols[1]:
    if config is not None:
        link("train", "Train again with these settings", **train_query(config))
with cols[2]:
    link("boundaries", "Its decision boundaries", run=run_id)
if info["error"]:
    st.error(escape(info["error"]))

rename, delete = st.columns(2)
with rename:
    new_name = st.text_input("name", value=info["name"], key=f"rename-{run_id}")
    if st.button("Rename", key="rename", disabled=not new_name.strip() or new_name == info["name"]):
        store.rename_run(run_id, new_name.strip())
        st.rerun()
with delete:
    sure = st.checkbox(
        "yes, delete this run and its files",
        key=f"sure-{run_id}",
        help="an active run is stopped first" if info["status"] in ACTIVE else None,
    )
    if st.button("Delete", key="delete", disabled=not sure, type="secondary"):
        store.delete_run(run_id)
        st.query_params["runs"] = ",".join(i for i in chosen if i != run_id)
        del st.query_params["run"]
        st.rerun()

config_yaml = info["config"] if config is None else config.to_yaml()
st.download_button(
    "Download its config (YAML)", config_yaml, file_name=f"{run_id}.yaml", mime="text/yaml", key="export"
)
st.code(config_yaml, language="yaml")
