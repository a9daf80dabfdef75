"""Home: what KD Explorer is, the store's runs at a glance, and a link to every page and lesson."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app.claims import show_claims
from app.common import escape, link, page, pick_run, start_run
from app.common import store as open_store
from kdlib import load_config

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "toy2d_kd.yaml"

store = open_store()
st.title("KD Explorer")
st.markdown(
    "Knowledge distillation trains a small **student** on the softened predictions of a larger **teacher**. "
    "Here you start distillation runs in the background, watch them learn live, compare their hyperparameters "
    "and results, and look inside: what happens to each sample, where the student sits on its teacher's route, "
    "what it predicts over the plane, epoch by epoch. Short lessons "
    "show the ideas on real numbers. Runs started from the command line (`python -m kdlib run`) or a notebook "
    "land in the same store and appear here too."
)

cols = st.columns(3)
with cols[0]:
    st.markdown("**Run**")
    link("train", "Train: pick, tune, start, watch")
    link("runs", "Runs & compare: overlay, rank, export")
    link("sweeps", "Sweeps: a study's trials side by side")
with cols[1]:
    st.markdown("**Look inside**")
    link("inspect", "Inspect samples")
    link("route", "Teacher route")
    link("boundaries", "Decision boundaries (2-D)")
    link("methods", "Method views (DFA, LSSKD, UDA)")
with cols[2]:
    st.markdown("**Learn**")
    link("temperature", "Temperature and dark knowledge")
    link("lesson_route", "Why a route eases the teacher (RCO)")
    link("lesson_pskd", "Progressive self-targets (PS-KD)")
    link("lesson_wsl", "Soft labels: bias and variance (WSL)")
with st.expander("Claims board: which lesson's effect shows on the embedded data, measured over seeds"):
    show_claims(title="Each claim against its baseline (bench/claims.py)")

if st.button(
    "Start the default run",
    type="primary",
    help=f"{DEFAULT_CONFIG.name}: KD on two moons with noisy labels; a few seconds on a CPU",
):
    config = load_config(DEFAULT_CONFIG, ["output.route={every: 1}"])
    st.switch_page(page("train"), query_params={"run": start_run(store, config)})

st.subheader("Runs")
st.caption(f"Store: {escape(store.home)}")
runs = store.runs(None)
if runs.empty:
    st.info("No runs yet. Start the default run above, open Train, or `python -m kdlib run configs/quickstart.yaml`.")
    st.stop()

counts = runs.status.value_counts()
metrics = st.columns(5)
metrics[0].metric("runs", len(runs))
metrics[1].metric("active", int(counts.reindex(["queued", "running", "paused"]).fillna(0).sum()))
metrics[2].metric("done", int(counts.get("done", 0)))
metrics[3].metric("stopped", int(counts.get("stopped", 0)), help="stopped by a user; Resume continues them")
metrics[4].metric("failed", int(counts.get("failed", 0)))
st.dataframe(
    runs[["name", "kind", "method", "status", "epochs_done", "total_epochs", "test_acc", "id"]].head(12),
    hide_index=True,
    width="stretch",
    column_config={"test_acc": st.column_config.NumberColumn("test acc", format="%.3f")},
)

run_id = pick_run(runs, "Open a run", key="home-run")
cols = st.columns(5)
with cols[0]:
    link("train", "Watch in Train", run=run_id)
with cols[1]:
    link("runs", "Compare", runs=run_id, run=run_id)
with cols[2]:
    link("inspect", "Its samples", run=run_id)
with cols[3]:
    link("route", "Its route", run=run_id)
with cols[4]:
    link("boundaries", "Boundaries", run=run_id)
