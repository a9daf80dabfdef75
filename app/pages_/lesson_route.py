"""Learn: why the converged teacher is a hard target and how a route eases it (RCO), on a real run's route."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app.claims import setting_button, show_claims
from app.common import link, live_panel, query_param, run_label, start_run
from app.common import store as open_store
from kdlib import load_config, viz
from kdlib.store import ACTIVE
from kdlib.views import has_route

DEMO = Path(__file__).resolve().parents[2] / "configs" / "mnist1d_rco.yaml"
DEMO_SETTINGS = ["epochs=8", "teacher.epochs=8", "data.n_samples=3000"]  # about a minute on a CPU


@st.cache_data(max_entries=256)
def profile_at(metrics, epoch: int):
    """The student's distance to each checkpoint at its first, chosen and last epoch (a slider's revisit is free)."""
    epochs = metrics.index.tolist()
    anchors = sorted(set(metrics.anchor_epoch.dropna().astype(int))) if "anchor_epoch" in metrics else None
    shown = sorted({epochs[0], epoch, epochs[-1]})
    return viz.route_profile_figure(metrics, shown, anchors, selected=epoch)


@st.fragment
def on_the_route(run_id: str) -> None:
    """The epoch slider and what it draws: moving it reruns this, not the page."""
    metrics = store.epoch_metrics(run_id)
    if not any(c.startswith("route_kl.") for c in metrics.columns):
        st.info("The student has not finished an epoch on the route yet.")
        return
    epochs = metrics.index.tolist()
    epoch = st.select_slider("student epoch", epochs, value=epochs[0], key=f"route-lesson-epoch-{run_id}")
    st.plotly_chart(profile_at(metrics, epoch), key="route-lesson-profile")
    columns = sorted(c for c in metrics.columns if c.startswith("route_kl."))
    row = metrics.loc[epoch, columns].astype(float)
    nearest = row.idxmin()
    cols = st.columns(3)
    cols[0].metric("nearest teacher checkpoint", f"epoch {int(nearest.split('.')[1])}")
    cols[1].metric("KL to it", f"{row[nearest]:.3f}")
    cols[2].metric("KL to the converged teacher", f"{row[columns[-1]]:.3f}")
    link("route", "See it as a map on the Teacher route page", run=run_id, epoch=epoch)


store = open_store()
st.title("A route eases the teacher (RCO)")
st.markdown(
    "A converged teacher is sharp and complex: its predictions are the end of a long optimization that a small "
    "student cannot follow from where it starts. Jin et al. (ICCV 2019) noticed that the teacher's own training "
    "passed through easier states. **Route constrained optimization** keeps the teacher's checkpoints (its "
    "*route*) and lets the student imitate them in order, each a target it can reach from where it is: a "
    "curriculum of teachers ending at the converged one.\n\n"
    "Below, real numbers from a run whose teacher kept its route: after every epoch the student's predictions "
    "on a fixed set of training samples are compared with each checkpoint's (mean KL divergence). Early on, the "
    "student is far closer to the teacher's early checkpoints than to the converged teacher; RCO's anchors "
    "(stars) are stepping stones along that line."
)

runs = store.runs("student")
routed = [i for i in runs.id if has_route(store, i)]
with_anchors = [i for i in routed if "anchor_epoch" in store.epoch_metrics(i)]
options = [*with_anchors, *(i for i in routed if i not in with_anchors)]
if (launched := st.query_params.get("run")) in runs.id.values and launched not in options:
    options.insert(0, launched)  # a demo run launched here that has not reached its route yet
wanted = query_param("run", options[0] if options else None, options=options, format_func=lambda i: run_label(runs, i))
if not options:
    st.info("No run with a teacher's route in the store yet. Launch a small RCO run on mnist1d and watch it here.")
# offered always: the store's other routed runs (toy2d ones, say) need not be RCO on mnist1d
if st.button("Launch the RCO demo (mnist1d, about a minute)", type="primary", key="route-lesson-launch"):
    st.query_params["run"] = start_run(store, load_config(DEMO, DEMO_SETTINGS))
    st.rerun()
if options:
    run_id = st.selectbox(
        "run",
        options,
        index=options.index(wanted),
        format_func=lambda i: run_label(runs, i),
        key="route-lesson-run",
        help="runs that follow anchors first, then any run whose teacher kept a route",
    )
    st.query_params["run"] = run_id
    if store.run(run_id)["status"] in ACTIVE:
        live_panel(store, run_id)
    on_the_route(run_id)

st.divider()
show_claims(["rco"])
st.markdown(
    "**Try it on real training.** The button opens Train with the claims board's setting for this lesson "
    "(`configs/claims/rco.yaml`: RCO on mnist1d, an MLP-128 student, 4 anchors of the CNN teacher's route, "
    "T = 1). Start it, then the same with `kd` as the method (the converged teacher from the start), and compare "
    "their test accuracy and the student's distance to the converged teacher in Runs & compare."
)
setting_button("Train with RCO", "rco", "route-lesson-train")
