"""Learn: soft labels' bias-variance trade-off and WSL's per-sample weights, on the closed form and a real run."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app.claims import setting_button, show_claims
from app.common import link, query_param, run_label
from app.common import store as open_store
from kdlib import viz
from kdlib.views import LoadedRun, runs_with, wsl_weight


@st.cache_data(max_entries=256)
def weight_map_at(p_student: float, p_teacher: float):
    """WSL's weight over (p_s,y, p_t,y), ringed at the sliders' point (a slider's revisit is free)."""
    grid = np.linspace(0.01, 0.99, 99)
    weights = wsl_weight(grid[None, :], grid[:, None])
    return viz.wsl_weight_map_figure(grid, grid, weights, (p_student, p_teacher))


@st.fragment
def closed_form() -> None:
    """The sliders and what they draw: moving one reruns this, not the page."""
    cols = st.columns(2)
    p_student = cols[0].slider(
        "p_s,y: the student's p(true)", 0.01, 0.99, query_param("ps", 0.8, low=0.01, high=0.99), 0.01, key="wsl-ps"
    )
    p_teacher = cols[1].slider(
        "p_t,y: the teacher's p(true)", 0.01, 0.99, query_param("pt", 0.6, low=0.01, high=0.99), 0.01, key="wsl-pt"
    )
    st.query_params.update(ps=f"{p_student:g}", pt=f"{p_teacher:g}")
    left, right = st.columns([3, 1])
    with left:
        st.plotly_chart(weight_map_at(p_student, p_teacher), key="wsl-map")
    with right:
        st.metric("weight w", f"{float(wsl_weight(p_student, p_teacher)):.3f}")
        st.metric("regularization sample", "yes" if p_teacher < p_student else "no")
        st.caption("Each point of the map is one sample; the ring is the sliders'. Move the teacher below the student.")


store = open_store()
st.title("Soft labels: bias and variance (WSL)")
st.markdown(
    "A teacher's soft labels lower the **variance** of what the student learns: they say how alike the classes "
    "are, so the student's predictions vary less from one training run to the next. But where the teacher is "
    "less sure of the true class than the student already is, following it adds **bias**: the soft label pulls "
    "the student away from the right answer. Zhou et al. (ICLR 2021) call these **regularization samples**. "
    "Dropping them hurts; instead WSL weighs each sample's soft label by\n\n"
    "$$w = 1 - \\exp\\left(-\\frac{CE_s}{CE_t}\\right), \\qquad CE = -\\log p_y,$$\n\n"
    "from the student's and the teacher's cross-entropy on the label: small where the student already beats "
    "the teacher ($p_{s,y} > p_{t,y}$, below $1 - 1/e$), near 1 where the teacher knows much better."
)

closed_form()

st.subheader("On a real run")
runs = store.runs("student")
found = runs_with(store, {"weight", "p_true_student", "p_true_teacher"})
if not found:
    st.info("No WSL run in the store yet: the button below opens Train with one.")
else:
    run_id = st.selectbox("WSL run", found, format_func=lambda i: run_label(runs, i), key="wsl-run")
    run = LoadedRun(run_id, store)
    epoch = st.select_slider("epoch", run.epochs, value=run.epochs[-1], key=f"wsl-epoch-{run_id}")
    samples = run.samples(epoch)
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(viz.soft_label_weights_figure(samples), key="wsl-real")
    with right:
        metrics = run.metrics
        if "train.reg_fraction" in metrics:
            figure = viz.scalars_figure(metrics, ["train.reg_fraction"], title="share of regularization samples")
            st.plotly_chart(figure, key="wsl-fraction")
        regularizing = samples.p_true_teacher < samples.p_true_student
        st.caption(
            f"At epoch {epoch}, {regularizing.mean():.1%} of the training samples are regularization samples; "
            f"their mean weight is {samples.weight[regularizing].mean():.3f}, the others' "
            f"{samples.weight[~regularizing].mean():.3f}."
        )
    link("inspect", "Their bias and variance in Inspect", run=run_id, view="bias_variance")

st.divider()
show_claims(["wsl-weights", "wsl"])
st.markdown(
    "**Try it on real training.** The button opens Train with the claims board's setting for this lesson "
    "(`configs/claims/wsl.yaml`: WSL at T = 2 on 17,500 mnist1d samples, an MLP-128 student far below its CNN "
    "teacher). Start it, then the same with `kd` as the method, and compare them in "
    "Runs & compare; in Inspect, compute each run's bias and variance."
)
setting_button("Train with WSL", "wsl", "wsl-train")
