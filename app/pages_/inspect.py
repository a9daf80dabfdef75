"""Inspect samples: per-sample views of a run at any epoch, and one sample's story over the epochs."""

from __future__ import annotations

import streamlit as st

from app.common import clicked_sample, dataset, epoch_slider, escape, link, pick_run, query_param
from app.common import store as open_store
from kdlib import viz
from kdlib.analysis import bias_variance_of_run, bias_variance_of_runs
from kdlib.views import (
    LoadedRun,
    regularization_flags,
    rescaling_summary,
    run_values,
    sample_input,
    sample_probabilities,
    sample_trajectories,
    sample_views,
    sibling_runs,
    trajectory_keys,
    value_label,
)

VIEWS = {
    "rescaling": "Gradient rescaling",
    "weights": "Soft-label weights",
    "bias_variance": "Bias and variance",
    "calibration": "Calibration",
}
SPLITS = {"rescaling": "train", "weights": "train", "bias_variance": "test", "calibration": "test"}
# The values each view is about: followed over the epochs at first; any other value the run offers can be added.
FOLLOWED = {
    "rescaling": ("p_true_student", "prev_p_true", "grad_scale_true", "logit_grad_ratio_true"),
    "weights": ("p_true_student", "p_true_teacher", "weight"),
    "bias_variance": ("p_true", "confidence"),
    "calibration": ("p_true", "confidence"),
}


@st.cache_data(show_spinner="asking the teacher about every test sample ...", max_entries=8)
def test_flags(home: str, run_id: str):
    from kdlib import RunStore

    return regularization_flags(RunStore(home), run_id, "test")


def chart(figure, view: str) -> None:
    """A per-sample figure whose points can be clicked to pick a sample."""
    st.plotly_chart(figure, key=f"inspect-chart-{view}", on_select="rerun", selection_mode="points")


def pick_sample(view: str, size: int, key: str, linked: bool) -> int:
    """The sample: the clicked point when a new one was clicked, else the number input (from the link at first,
    when the link's sample is of this split: `linked`)."""
    clicked = clicked_sample(st.session_state.get(f"inspect-chart-{view}"))
    if clicked is not None and clicked != st.session_state.get("inspect-clicked") and clicked < size:
        st.session_state[key] = clicked  # before the number input is drawn
    st.session_state["inspect-clicked"] = clicked
    if key not in st.session_state or st.session_state[key] >= size:
        st.session_state[key] = query_param("sample", 0, low=0, high=size - 1) if linked else 0
    sample = st.number_input("sample", 0, size - 1, key=key, help="its index in the split; or click a point")
    st.query_params["sample"] = str(sample)
    return int(sample)


def run_labels(run: LoadedRun, samples) -> dict[str, str]:
    """The run's declared label of each of these columns (`kdlib.views.value_label`)."""
    values = run_values(run.store, run.run_id)
    return {k: value_label(values, k) for k in samples.columns}


def rescaling(run: LoadedRun, samples, sample: int) -> None:
    chart(viz.rescaling_figure(samples, selected=sample, labels=run_labels(run, samples)), "rescaling")
    summary = rescaling_summary(samples)
    cols = st.columns(3)
    cols[0].metric("mean rescaling, easier half", f"{summary['easier half']:.2f}")
    cols[1].metric("mean rescaling, harder half", f"{summary['harder half']:.2f}")
    cols[2].metric("pushed down (below 0)", f"{summary['pushed down']:.1%}")
    if "grad_scale_true" in samples:
        st.caption(
            f"PS-KD at α_t = {samples.alpha_t.iloc[0]:.3f}: the target mixes the label with last epoch's prediction, "
            "so samples the model already gets right lose most of their gradient and hard ones keep it."
        )
    else:
        st.caption(
            "The gradient at the true-class logit as a share of plain cross-entropy's (1 = like CE): the one "
            "the step's own backward pass put there, read the same way for every method, against how hard the "
            "sample was for the student at that step."
        )


def weights(run: LoadedRun, samples, sample: int) -> None:
    chart(viz.soft_label_weights_figure(samples, selected=sample, labels=run_labels(run, samples)), "weights")
    regularizing = samples.reg_sample if "reg_sample" in samples else samples.p_true_teacher < samples.p_true_student
    cols = st.columns(2)
    cols[0].metric(
        "regularization samples",
        f"{regularizing.mean():.1%}",
        help="the teacher is less sure of the "
        "true class than the student: the soft label pulls the student away from it",
    )
    cols[1].metric("mean weight", f"{samples.weight.mean():.3f}")


def bias_and_variance(run: LoadedRun, sample: int) -> None:
    store, run_id = run.store, run.run_id
    cols = st.columns(2)
    with cols[0]:
        last = st.number_input("last k epochs", 2, 100, 5, key="inspect-bv-last")
        if st.button(
            "Compute over the last k epochs", key="inspect-bv-run", help="snapshot estimate: optimization noise"
        ):
            try:
                bias_variance_of_run(store, run_id, last=last)
                st.session_state["inspect-bv-computed"] = f"bias_variance.test.last{last}"
            except ValueError as error:
                st.error(escape(error))
    with cols[1]:
        siblings = sibling_runs(store, run_id)
        others = st.multiselect("runs of the same config (other seeds)", siblings, key="inspect-bv-others")
        if st.button("Compute across these runs", key="inspect-bv-runs", disabled=not others):
            try:
                bias_variance_of_runs(store, [run_id, *others])
                names = "+".join(sorted([run_id, *others]))[:80]  # how bias_variance_of_runs names it
                st.session_state["inspect-bv-computed"] = f"bias_variance.test.runs-{names}"
            except ValueError as error:
                st.error(escape(error))
        if not siblings:
            st.caption("No other seeds of this config in the store: train it again with another seed to compare.")
    saved = [a for a in store.analyses(run_id) if a.startswith("bias_variance.")]
    if not saved:
        st.info("No bias-variance analysis of this run yet: compute one above.")
        return
    computed = st.session_state.get("inspect-bv-computed")  # a new analysis is shown first
    index = saved.index(computed) if computed in saved else 0
    name = st.selectbox("saved analysis", saved, index=index, key=f"inspect-bv-name-{run_id}-{computed}")
    frame = store.analysis(run_id, name)
    flags = test_flags(str(store.home), run_id)
    chart(viz.bias_variance_figure(frame, color=flags, selected=sample), "bias_variance")
    cols = st.columns(3)
    cols[0].metric("mean bias", f"{frame.bias.mean():.3g}")
    cols[1].metric("mean variance", f"{frame.variance.mean():.3g}")
    if flags is not None:
        cols[2].metric(
            "regularization samples",
            f"{flags.mean():.1%}",
            help="the teacher is less sure of the true class than the student (the points marked yes)",
        )


def calibration(run: LoadedRun, epoch: int, sample: int) -> None:
    arrays, samples = run.arrays(epoch, "test"), run.samples(epoch, "test")
    left, right = st.columns(2)
    with left:
        st.plotly_chart(viz.reliability_figure(arrays["reliability"], f"Test split, epoch {epoch}"), key="inspect-rel")
    with right:
        if {"confidence", "p_true"} <= set(samples.columns):
            correct = samples.assign(correct=(samples.predicted == samples.label).astype(float))
            values = run_values(run.store, run.run_id)
            labels = {k: value_label(values, k) for k in ("confidence", "p_true")} | {"correct": "correct"}
            figure = viz.per_sample_scatter_figure(correct, "confidence", "p_true", "correct", sample, "", labels)
            chart(figure, "calibration")


def trajectory_choice(run: LoadedRun, view: str, split: str, values: dict) -> list[str]:
    """The values to follow over the epochs, by their labels: any the run declares and the split holds; at
    first those the view is about."""
    offered = trajectory_keys(run.store, run.run_id, split)
    return st.multiselect(
        "values over the epochs",
        offered,
        default=[k for k in offered if k in FOLLOWED[view]] or offered[:1],
        format_func=lambda k: value_label(values, k),
        key=f"inspect-values-{run.run_id}-{view}",
        help="what the run records per sample (the method's values, the gradient probe's, the evaluation's)",
    )


def one_sample(run: LoadedRun, view: str, epoch: int, split: str, sample: int) -> None:
    """The sample's values over the epochs, its input, and the teacher's and student's top classes."""
    config = run.config
    values = run_values(run.store, run.run_id)
    left, right = st.columns([3, 2])
    with left:
        chosen = trajectory_choice(run, view, split, values)
        series = sample_trajectories(run.store, run.run_id, sample, split, chosen)
        value_labels = {k: value_label(values, k) for k in series}
        figure = viz.trajectory_figure(series, "over the epochs", epoch=epoch, labels=value_labels)
        st.plotly_chart(figure, key="inspect-trajectory")
    try:
        data = dataset(config.data.name, config.data.model_dump_json())
    except Exception as error:  # noqa: BLE001 - files of a downloaded set may be gone; the rest still shows
        data = None
        right.info(f"The run's data cannot be loaded here, so its input is not shown: {escape(error)}")
    if data is None:
        return
    names = data.class_names or [str(k) for k in range(data.num_classes)]
    part = getattr(data, split)
    label = names[int(part.targets[sample])]
    x = sample_input(data, split, sample)
    points = part.x.numpy() if x.size == 2 and hasattr(part, "x") else None
    labels = part.targets.numpy() if points is not None else None
    with right:
        st.plotly_chart(viz.sample_input_figure(x, points, labels, f"its input · label {label}"), key="inspect-input")
        probs = sample_probabilities(run.store, run.run_id, epoch, sample, split, data)
        if probs:
            st.plotly_chart(
                viz.top_classes_figure(probs, names, title=f"top classes, epoch {epoch}"), key="inspect-top"
            )
        row = run.samples(epoch, split).loc[sample]
        known = {k: row[k] for k in ("p_true_student", "p_true_teacher", "p_true") if k in row}
        if known:
            shown = ", ".join(f"{escape(value_label(values, k))} = {v:.3f}" for k, v in known.items())
            st.caption(f"Stored at this epoch: {shown}")


store = open_store()
st.title("Inspect samples")
st.caption(
    "What a method does to each training sample, epoch by epoch: how much gradient it keeps, how much its soft "
    "label counts, how biased and how variable its prediction is, how well the confidence matches accuracy. "
    "Pick a sample by its index or by clicking a point to follow it over the epochs."
)
runs = store.runs(None)
runs = runs[[bool(store.per_sample_epochs(i)) for i in runs.id]]
if runs.empty:
    st.info("No run with per-sample values yet. Every run records them after its first epoch: start one in Train.")
    link("train", "Train a run")
    st.stop()
run_id = pick_run(runs, "run", key="inspect-run")
run = LoadedRun(run_id, store)
epoch = epoch_slider(run.epochs, key=f"inspect-epoch-{run_id}")
train, test = run.samples(epoch, "train"), run.arrays(epoch, "test")
views = sample_views(train.columns, test)
if not views:
    st.info("This run recorded no per-sample values that these views read (set probes.per_sample: true).")
    st.stop()

left, right = st.columns([3, 1])
with left:
    wanted = query_param("view", views[0], options=views, format_func=VIEWS.get)
    view = st.radio("view", views, index=views.index(wanted), format_func=VIEWS.get, horizontal=True)
split = SPLITS[view]
linked = st.query_params.get("split", split) == split  # the sample in the address is one of this split's
st.query_params.update(view=view, split=split)
with right:
    size = len(train) if split == "train" else len(test["label"])
    sample = pick_sample(view, size, key=f"inspect-sample-{run_id}-{split}", linked=linked)

if view == "rescaling":
    rescaling(run, train, sample)
elif view == "weights":
    weights(run, train, sample)
elif view == "bias_variance":
    bias_and_variance(run, sample)
else:
    calibration(run, epoch, sample)

st.subheader(f"Sample {sample} of the {split} split")
try:
    one_sample(run, view, epoch, split, sample)
except Exception as error:  # noqa: BLE001 - a view of one sample must not take the page down
    st.warning(f"This sample's details could not be shown: {escape(error)}")
cols = st.columns(3)
with cols[0]:
    link("route", "This run on its teacher's route", run=run_id, epoch=epoch)
with cols[1]:
    link("methods", "Its method views", run=run_id)
with cols[2]:
    link("runs", "Its curves in Runs & compare", runs=run_id, run=run_id)
