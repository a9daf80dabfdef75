"""Learn: temperature and dark knowledge, on a trained teacher's logits (or an example vector)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app.claims import setting_button, show_claims
from app.common import escape, query_list, query_param, run_label
from app.common import store as open_store
from kdlib import viz
from kdlib.views import entropy_curve, run_logits, softmax_table

EXAMPLE = np.array([8.0, 5.5, 4.5, 0.5, -1.5]), ["dog", "wolf", "cat", "car", "carrot"]
COMPARE = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]


@st.cache_data(show_spinner="computing the teacher's logits ...", max_entries=4)
def logits_of(home: str, run_id: str):
    from kdlib import RunStore

    return run_logits(RunStore(home), run_id, "test")


@st.cache_data(max_entries=256)
def figures_at(logits: np.ndarray, names: list[str], temperatures: tuple[float, ...], temperature: float):
    """The softmax bars at each temperature and the entropy curve, marked at `temperature` (a slider's revisit is free)."""
    table = softmax_table(logits, list(temperatures), names)
    curve = entropy_curve(logits, np.geomspace(0.25, 50, 200))
    at = table[table.temperature == temperature].probability.to_numpy()
    second = float(np.sort(at)[-2]) if len(at) > 1 else 0.0
    bars = viz.softmax_temperature_figure(table, title="softmax(z / T)")
    return bars, viz.entropy_figure(curve, temperature, len(names)), float(at.max()), second


@st.fragment
def soften(logits: np.ndarray, names: list[str]) -> float:
    """The temperature slider and what it draws: moving it reruns this, not the page. Returns the temperature."""
    cols = st.columns([3, 2])
    with cols[0]:
        temperature = st.slider(
            "temperature T", 0.5, 20.0, value=query_param("T", 4.0, low=0.5, high=20.0), step=0.5, key="temperature-T"
        )
    with cols[1]:
        wanted = query_list("compare", COMPARE, cast=float)
        others = st.multiselect(
            "compare with",
            COMPARE,
            default=[1.0] if wanted is None else wanted,
            format_func=lambda t: f"T = {t:g}",
            key="temperature-compare",
        )
    st.query_params["T"] = f"{temperature:g}"
    st.query_params["compare"] = ",".join(f"{t:g}" for t in others)
    bars, entropy, top, second = figures_at(logits, list(names), tuple(sorted({temperature, *others})), temperature)
    cols = st.columns([3, 2])
    with cols[0]:
        st.plotly_chart(bars, key="softmax-bars")
    with cols[1]:
        st.plotly_chart(entropy, key="entropy")
        metrics = st.columns(2)
        metrics[0].metric("top class at T", f"{top:.3f}")
        metrics[1].metric("runner-up at T", f"{second:.3f}")
    return temperature


store = open_store()
st.title("Temperature and dark knowledge")
st.markdown(
    "A classifier's softmax turns logits $z$ into probabilities. A trained teacher is confident: at $T = 1$ "
    "nearly all the mass sits on one class, and what it knows about the *other* classes (a wolf looks more like "
    "a dog than a car does) is hidden in probabilities too small to learn from. Hinton et al. (2015) called this "
    "**dark knowledge**, and divided the logits by a temperature $T > 1$ before the softmax: "
    "$p_i = \\exp(z_i / T) / \\sum_j \\exp(z_j / T)$. The ranking of the classes stays, but the small "
    "probabilities grow, so the student sees which wrong classes the teacher finds plausible. Too high a $T$ "
    "flattens everything toward uniform; the entropy below measures how soft the target is."
)

teachers = store.runs("teacher")
finished = [
    s == "done" and (store.run_dir(i) / "model.pt").exists() for i, s in zip(teachers.id, teachers.status, strict=True)
]
teachers = teachers.loc[np.array(finished, dtype=bool)]
sources = ["example", *teachers.id]
# a teacher of more than two classes shows dark knowledge best; with two, the example is the better start
rich = [i for i in teachers.id if (getattr(store.config(i).data, "num_classes", None) or 10) > 2]


def source_label(source: str) -> str:
    return "an example vector (a picture of a dog)" if source == "example" else run_label(teachers, source)


wanted = query_param("source", rich[0] if rich else "example", options=sources, format_func=source_label)
source = st.selectbox(
    "logits from",
    sources,
    index=sources.index(wanted),
    format_func=source_label,
    help="a trained teacher of the store (a test sample of its data), or a fixed example",
    key="temperature-source",
)
st.query_params["source"] = source

if source == "example":
    logits, names = EXAMPLE
    st.caption(
        "Logits of an imagined teacher for a picture of a dog: "
        + ", ".join(f"{escape(n)} {z:g}" for n, z in zip(names, logits, strict=True))
    )
else:
    all_logits, labels, names = logits_of(str(store.home), source)
    sample = st.number_input(
        "test sample",
        min_value=0,
        max_value=len(labels) - 1,
        value=query_param("sample", 0, low=0, high=len(labels) - 1),
        key=f"temperature-sample-{source}",
        help="the index of a test sample of the teacher's data",
    )
    st.query_params["sample"] = str(sample)
    logits = all_logits[sample]
    st.caption(
        f"Test sample {sample}: label **{escape(names[labels[sample]])}**, the teacher predicts "
        f"**{escape(names[int(logits.argmax())])}**. Its logits: " + ", ".join(f"{z:.2f}" for z in logits)
    )

temperature = soften(logits, names)

st.markdown(
    "**What to notice.** At $T = 1$ the bars of the wrong classes are nearly flat at zero. Raise $T$: the "
    "runner-up classes rise in the order the teacher ranks them, while the top class falls. KD multiplies its "
    "soft term by $T^2$, because the gradients of the softened distributions shrink as $1/T^2$."
)
st.divider()
show_claims(["temperature", "temperature-ce"])
st.markdown(
    "**Try it on real training.** The button opens Train with the claims board's setting for this lesson "
    "(`configs/claims/temperature.yaml`: mnist1d, 10 classes, an MLP student and a 1-D CNN teacher) at "
    "the slider's $T$. Start it, then run it again at $T = 1$ and compare the two in Runs & compare."
)
# the slider's value as of this page's run: a click reruns the page, and the slider's part with it
setting_button("Train with KD at the slider's T", "temperature", "temperature-train", **{"method.temperature": temperature})
