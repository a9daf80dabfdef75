"""Learn: progressive self-targets and gradient rescaling (PS-KD), on the closed form and a real run."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app.claims import setting_button, show_claims
from app.common import link, query_param, run_label
from app.common import store as open_store
from kdlib import viz
from kdlib.views import LoadedRun, pskd_rescaling, pskd_target_true, rescaling_summary, runs_with


@st.cache_data(max_entries=256)
def rescaling_at(alpha: float, prev: float, now: float):
    """The rescaling curves at the sliders' α_t and p̃_g, marked at p_g, and w_gt (a slider's revisit is free)."""
    grid = np.linspace(0, 0.99, 199)
    curves = {
        f"p̃_g = {prev:g} (the sliders)": pskd_rescaling(alpha, prev, grid),
        "p̃_g = p_g (no progress since last epoch)": pskd_rescaling(alpha, grid, grid),
        "p̃_g = 0.2 (a hard sample)": pskd_rescaling(alpha, 0.2, grid),
    }
    w_gt = float(pskd_rescaling(alpha, prev, now))
    return viz.pskd_rescaling_curve_figure(grid, curves, (now, w_gt)), w_gt


@st.fragment
def closed_form() -> float:
    """The sliders and what they draw: moving one reruns this, not the page. Returns α_t."""
    cols = st.columns(3)
    alpha = cols[0].slider("α_t", 0.0, 1.0, query_param("alpha", 0.5, low=0, high=1), 0.05, key="pskd-alpha")
    prev = cols[1].slider(
        "p̃_g: last epoch's p(true)", 0.0, 0.99, query_param("prev", 0.9, low=0, high=0.99), 0.01, key="pskd-prev"
    )
    now = cols[2].slider("p_g: p(true) now", 0.0, 0.99, query_param("p", 0.95, low=0, high=0.99), 0.01, key="pskd-p")
    st.query_params.update(alpha=f"{alpha:g}", prev=f"{prev:g}", p=f"{now:g}")
    figure, w_gt = rescaling_at(alpha, prev, now)
    left, right = st.columns([3, 1])
    with left:
        st.plotly_chart(figure, key="pskd-curve")
    with right:
        st.metric("w_gt", f"{w_gt:.3f}")
        st.metric("target q_g", f"{pskd_target_true(alpha, prev):.3f}")
        st.caption("pushed down: the model is above its target" if w_gt < 0 else f"{w_gt:.0%} of cross-entropy's gradient")
    return alpha


store = open_store()
st.title("Progressive self-targets and gradient rescaling (PS-KD)")
st.markdown(
    "PS-KD (Kim et al., ICCV 2021) has no separate teacher: the model teaches itself. At epoch $t$ the target of "
    "a sample mixes its label with the model's own prediction of the epoch before, "
    "$q = (1 - \\alpha_t)\\, y + \\alpha_t\\, \\tilde p$, and $\\alpha_t$ grows linearly to $\\alpha_T$. "
    "The gradient at the true-class logit becomes $p_g - q_g$ instead of cross-entropy's $p_g - 1$; "
    "their ratio is\n\n"
    "$$w_{gt} = 1 - \\alpha_t \\frac{1 - \\tilde p_g}{1 - p_g}.$$\n\n"
    "A sample the model already finds easy ($p_g$ near 1) loses most of its gradient, or is even pushed down "
    "($w_{gt} < 0$: the model is more confident than its target, which calibrates it); a hard sample keeps "
    "more of it (about $1 - \\alpha_t$ when its prediction did not move). That is hard-example mining without "
    "choosing examples."
)

alpha = closed_form()

st.subheader("On a real run")
runs = store.runs("student")
found = runs_with(store, {"grad_scale_true", "prev_p_true", "p_true_student"})
if not found:
    st.info("No PS-KD run in the store yet: the button below opens Train with one.")
else:
    run_id = st.selectbox("PS-KD run", found, format_func=lambda i: run_label(runs, i), key="pskd-run")
    run = LoadedRun(run_id, store)
    epoch = st.select_slider("epoch", run.epochs, value=run.epochs[-1], key=f"pskd-epoch-{run_id}")
    samples = run.samples(epoch)
    st.plotly_chart(viz.rescaling_figure(samples), key="pskd-real")
    summary = rescaling_summary(samples)
    st.caption(
        f"At epoch {epoch} (α_t = {samples.alpha_t.iloc[0]:.3f}) the easier half of the samples keeps "
        f"{summary['easier half']:.2f} of cross-entropy's gradient on average, the harder half "
        f"{summary['harder half']:.2f}; {summary['pushed down']:.1%} are pushed down."
    )
    link("inspect", "Follow one sample in Inspect", run=run_id, epoch=epoch, view="rescaling")

st.divider()
show_claims(["pskd-ece", "pskd-acc", "pskd-rescaling"])
st.markdown(
    "**Try it on real training.** The button opens Train with the claims board's setting for this lesson "
    "(`configs/claims/pskd.yaml`: an MLP 256x256 on 17,500 mnist1d samples, which CE leaves over-confident) "
    "with the slider's $\\alpha_t$ as $\\alpha_T$. Start it, then the same with `ce` as the method, and compare "
    "their calibration error (`test.ece`) in Runs & compare: PS-KD's samples that are already right stop "
    "pushing the confidence up."
)
# the slider's value as of this page's run: a click reruns the page, and the sliders' part with it
setting_button("Train with PS-KD at the slider's α_t", "pskd", "pskd-train", **{"method.alpha_T": alpha})
