"""Decision boundaries: what a 2-D run's student (and its teacher) predict over the plane, epoch by epoch."""

from __future__ import annotations

import numpy as np
import streamlit as st
import yaml

from app.common import dataset, link, pick_run, query_param
from app.common import store as open_store
from kdlib import viz
from kdlib.views import (
    coefficient_at,
    grid_probabilities,
    load_student,
    load_teacher,
    plane_grid,
    predict_proba,
    route_epochs,
)

COLORS = {"soft": "the teacher's soft label", "label": "the training label"}


@st.cache_data(show_spinner=False)
def data_name(home: str, run_id: str, config_text: str) -> str:
    return (yaml.safe_load(config_text) or {}).get("data", {}).get("name", "")


def point_values(teacher, points: np.ndarray, labels: np.ndarray, temperature: float) -> np.ndarray:
    """p(class 1) of the teacher at T for two classes; with more, its probability of each point's label."""
    probs = predict_proba(teacher, points, temperature)
    return probs[:, 1] if probs.shape[1] == 2 else probs[np.arange(len(labels)), labels]


store = open_store()
st.title("Decision boundaries")
st.caption(
    "For runs on 2-D data (toy2d): the regions each model predicts over the plane, with the training points on "
    "top. Step through the epochs to see the student's boundary form; colour the points by the teacher's soft "
    "label at the run's temperature to see what the student is asked to match."
)
runs = store.runs(None)
planar = runs.loc[np.array([data_name(str(store.home), i, store.run(i)["config"]) == "toy2d" for i in runs.id], bool)]
if planar.empty:
    st.info("No runs on 2-D data yet. Train one on toy2d: its weights are kept after every epoch for this page.")
    link("train", "Train a toy2d run", data="toy2d")
    st.stop()

run_id = pick_run(planar, "run", key="boundaries-run")
config = store.config(run_id)
data = dataset(config.data.name, config.data.model_dump_json())
points, labels = data.train.x.numpy(), data.train.y.numpy()
epochs = route_epochs(store, run_id)
final = (store.run_dir(run_id) / "model.pt").exists()
if not epochs and not final:
    st.info("This run has saved no weights yet; they appear here after its first epoch.")
    st.stop()
if not epochs:
    st.warning(
        "This run kept no weights per epoch (its config has no `output.route`); showing its final weights. "
        "Runs started from Train on toy2d keep them."
    )

cols = st.columns([3, 2])
with cols[0]:
    epoch = (
        st.select_slider(
            "epoch (the weights after this many epochs)",
            options=epochs,
            value=query_param("epoch", epochs[-1], options=epochs),
            key=f"boundaries-epoch-{run_id}",
        )
        if len(epochs) > 1
        else (epochs[0] if epochs else None)
    )
    if epoch is not None:
        st.query_params["epoch"] = str(epoch)
teacher = load_teacher(store, run_id, data)
with cols[1]:
    options = list(COLORS) if teacher is not None else ["label"]
    wanted = query_param("color", options[0], options=options, format_func=COLORS.get)
    color = st.radio(
        "colour the points by",
        options,
        index=options.index(wanted),
        format_func=COLORS.get,
        horizontal=True,
        key="boundaries-color",
        help=None if teacher is not None else "this run has no trained teacher, so no soft labels",
    )
    st.query_params["color"] = color

temperature = coefficient_at(config, "temperature", max((epoch or config.epochs) - 1, 0))
if color == "soft":
    values, color_by = point_values(teacher, points, labels, temperature), "probability"
    st.caption(
        f"Points: the teacher's soft label at the run's temperature T = {temperature:g} (epoch {epoch}), on the "
        "background's scale. Background: each model's predicted probability; the line is its boundary."
    )
else:
    values, color_by = labels, "label"

xs, ys = plane_grid(points)
student = load_student(store, run_id, epoch, data)
metrics = store.epoch_metrics(run_id)
row = metrics.loc[epoch - 1] if epoch and epoch - 1 in metrics.index else None
title = f"student ({config.student.name}) after {epoch if epoch is not None else 'all'} epochs"
if row is not None and "test.acc" in row:
    title += f" · test acc {row['test.acc']:.3f}"
panels = st.columns(2) if teacher is not None else [st.container()]
with panels[0]:
    st.plotly_chart(
        viz.decision_boundary_figure(
            xs, ys, grid_probabilities(student, xs, ys), points, values, color_by, title, show_scale=teacher is None
        ),
        key="boundary-student",
    )
if teacher is not None:
    with panels[1]:
        st.plotly_chart(
            viz.decision_boundary_figure(
                xs, ys, grid_probabilities(teacher, xs, ys), points, values, color_by, "teacher (converged)"
            ),
            key="boundary-teacher",
        )
link("runs", "This run's curves in Runs & compare", runs=run_id, run=run_id)
