"""KD Explorer, first page: the runs in the store, and the default run started with one click."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from kdlib import RunStore, launch, load_config, viz

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "toy2d_kd.yaml"

st.set_page_config(page_title="KD Explorer", layout="wide")
store = RunStore()
st.title("KD Explorer")
st.caption(f"Knowledge distillation runs, live. Store: `{store.home}`")

if st.button("Start the default run", type="primary", help=f"{DEFAULT_CONFIG.name}: KD on two moons, a few seconds"):
    handle = launch(load_config(DEFAULT_CONFIG), home=store.home)
    st.query_params["run"] = handle.run_id

runs = store.runs(None)
if runs.empty:
    st.info("No runs yet. Start the default run above, or `python -m kdlib run configs/quickstart.yaml` in a shell.")
    st.stop()

st.subheader("Runs")
st.dataframe(
    runs[["id", "name", "kind", "method", "status", "epoch", "total_epochs", "test_acc"]],
    hide_index=True,
    width="stretch",
)

ids = runs.id.tolist()
wanted = st.query_params.get("run")
run_id = st.selectbox(
    "Run to watch",
    ids,
    index=ids.index(wanted) if wanted in ids else 0,
    format_func=lambda i: f"{i} · {runs.set_index('id').name[i]}",
)
st.query_params["run"] = run_id


@st.fragment(run_every="1s")
def live(run_id: str) -> None:
    if run_id not in store.runs(None).id.values:
        st.warning(f"Run {run_id} is no longer in the store.")
        return
    run = store.run(run_id)
    epochs, steps = store.epoch_metrics(run_id), store.step_metrics(run_id)
    done = len(epochs)
    st.progress(done / max(run["total_epochs"] or 1, 1), text=f"{run['status']} · epoch {done}/{run['total_epochs']}")
    if run["error"]:
        st.error(run["error"])
    if epochs.empty and steps.empty and run["status"] == "running":
        teachers = store.runs("teacher")
        active = teachers[teachers.status == "running"]
        if not active.empty:
            st.info("Training the teacher first (it is trained once and reused by later runs).")
            run_id = active.id.iloc[0]
            epochs, steps = store.epoch_metrics(run_id), store.step_metrics(run_id)
    st.plotly_chart(viz.training_curves_figure(steps, epochs, title=run["name"]), key=f"curves-{run_id}")


live(run_id)
