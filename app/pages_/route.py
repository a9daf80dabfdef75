"""Teacher route: the teacher's checkpoints and the student's epochs in one map of output space, the
student's distance to every checkpoint over time, and RCO's anchor schedule."""

from __future__ import annotations

import streamlit as st

from app.common import epoch_slider, escape, link, pick_run
from app.common import store as open_store
from kdlib import viz
from kdlib.analysis import route_layout
from kdlib.views import has_route

store = open_store()
st.title("Teacher route")
st.caption(
    "A teacher passes through easier states on its way to convergence. Its checkpoints (the route) and the "
    "student's epochs are placed in one map: the principal components of their predictions on a fixed set of "
    "training samples, so nearby points predict alike. RCO's anchors are starred; ProKT's teacher, which moves "
    "with the student, draws a path of its own."
)
runs = store.runs("student")
if runs.empty:
    st.info("No student runs yet. Runs started from Train keep their teacher's route.")
    link("train", "Train a run")
    st.stop()
routed = [i for i in runs.id if has_route(store, i)]
run_id = pick_run(runs, "run", key="route-run", default=routed[0] if routed else None)
if not has_route(store, run_id):
    st.info(
        "This run has no route: it has no teacher, or its teacher kept no checkpoints. Give the teacher a route "
        "with `teacher.route` (`teacher: {route: {every: 1}}`, the default, also for runs from Train) and train "
        "the run again: the student is then placed on the route after every epoch (`probes.route_probe_size`)."
    )
    link("train", "Train an RCO run, which follows the route", data="toy2d", method="rco")
    st.stop()

epochs = store.per_sample_epochs(run_id, split="probe")
if not epochs:
    st.info("The student has not finished an epoch yet: it appears on the route after its first.")
    st.stop()
epoch = epoch_slider(epochs, key=f"route-epoch-{run_id}", label="student epoch")
metrics = store.epoch_metrics(run_id)
try:
    st.plotly_chart(viz.route_map_figure(route_layout(store, run_id, up_to_epoch=epoch)), key="route-map")
except ValueError as error:  # probe arrays of different sizes (a run written by an older kdlib)
    st.warning(f"The route map cannot be drawn: {escape(error)}")
st.caption(
    "Numbers on the map count completed epochs: the student's point n is its state after slider epoch n - 1 "
    "(epochs count from 0, as in the curves below)."
)

row = metrics.loc[epoch] if epoch in metrics.index else None
distances = sorted(c for c in metrics.columns if c.startswith("route_kl."))
if row is not None and distances:
    cols = st.columns(3)
    nearest = min(distances, key=lambda c: row[c])
    cols[0].metric("nearest teacher checkpoint", f"epoch {int(nearest.split('.')[1])}")
    cols[1].metric("KL to the converged teacher", f"{row[distances[-1]]:.3f}")
    if "anchor_epoch" in row and row.anchor_epoch == row.anchor_epoch:  # not NaN
        cols[2].metric("current anchor: the teacher after", f"epoch {int(row.anchor_epoch)}")

st.plotly_chart(viz.route_distance_figure(metrics), key="route-distance")
if "anchor_epoch" in metrics:
    st.plotly_chart(viz.anchor_schedule_figure(metrics, epoch), key="route-anchors")
cols = st.columns(2)
with cols[0]:
    link("inspect", "Its samples in Inspect", run=run_id, epoch=epoch)
with cols[1]:
    link("lesson_route", "Lesson: why a route eases the teacher")
