"""Inspect samples: per-sample views of a run at an epoch, and one sample followed over the epochs."""

from __future__ import annotations

import numpy as np
import pytest

from app.common import clicked_sample
from kdlib.runner import execute
from kdlib.store import RunStore
from kdlib.views import load_run, run_values, value_label
from tests.app.conftest import figures, open_page


def names(figure: dict) -> list[str]:
    return [trace.get("name") for trace in figure["data"]]


def by_sample(figure: dict, axis: str = "y") -> np.ndarray:
    """A per-sample scatter's values in sample order, gathered from its point traces (a flag splits them in two)."""
    traces = [t for t in figure["data"] if t.get("customdata")]
    pairs = [(i, v) for t in traces for i, v in zip(t["customdata"], t[axis], strict=True)]
    return np.array([v for _, v in sorted(pairs)])


def labels(store, run_id: str, *keys: str) -> set[str]:
    """How the page names these per-sample keys: their declared labels."""
    values = run_values(store, run_id)
    return {value_label(values, k) for k in keys}


def test_an_empty_store_points_to_train():
    app = open_page("inspect")
    assert "No run with per-sample values" in app.info[0].value
    assert app.get("page_link")[0].proto.page == "train"


def test_pskd_rescaling_against_difficulty_and_one_sample_over_the_epochs(methods):
    store, runs = methods
    app = open_page("inspect", run=runs["pskd"], sample="7")
    assert app.radio[0].options == ["Gradient rescaling", "Bias and variance", "Calibration"]
    assert app.select_slider[0].options == ["0", "1", "2"] and app.select_slider[0].value == 2
    assert app.number_input(key=f"inspect-sample-{runs['pskd']}-train").value == 7
    rescaling, trajectory, point, top = figures(app)
    samples = load_run(runs["pskd"], store.home).samples(2)
    assert np.allclose(rescaling["data"][0]["x"], 1 - samples.prev_p_true, atol=1e-3)
    assert np.allclose(rescaling["data"][0]["y"], samples.grad_scale_true, atol=1e-3)
    assert rescaling["data"][1]["name"] == "sample 7"
    assert labels(store, runs["pskd"], "p_true_student", "prev_p_true", "grad_scale_true") <= set(names(trajectory))
    assert "true-class gradient rescaling" in names(trajectory)  # a label, not the key grad_scale_true
    assert trajectory["data"][0]["x"] == [0, 1, 2]
    assert names(point)[-1] == "this sample" and len(point["data"][0]["x"]) == 280
    assert names(top) == ["student"]  # PS-KD has no teacher; the student's weights after epoch 3
    assert [app.query_params[k] for k in ("epoch", "sample", "split", "view")] in (
        ["2", "7", "train", "rescaling"],
        [["2"], ["7"], ["train"], ["rescaling"]],
    )


def test_wsl_weights_with_the_share_of_regularization_samples(methods):
    store, runs = methods
    app = open_page("inspect", run=runs["wsl"], view="weights", epoch="1")
    assert app.radio[0].value == "weights" and app.select_slider[0].value == 1
    weights, trajectory, point, top = figures(app)
    samples = load_run(runs["wsl"], store.home).samples(1)
    assert np.allclose(by_sample(weights), samples.weight, atol=1e-3)
    assert names(weights)[:2] == ["regularization sample: yes", "regularization sample: no"]  # a legend, no bar
    assert len(weights["data"][0]["x"]) == int(samples.reg_sample.sum())
    assert app.metric[0].value == f"{samples.reg_sample.mean():.1%}"
    assert names(top) == ["teacher", "student"] and labels(store, runs["wsl"], "weight") <= set(names(trajectory))
    chosen = app.multiselect(key=f"inspect-values-{runs['wsl']}-weights")
    assert "WSL weight" in chosen.options and chosen.value == ["p_true_student", "p_true_teacher", "weight"]
    assert {"loss", "CE student", "true-class gradient / CE's"} <= set(chosen.options)  # offered, to add
    chosen.set_value(["weight", "ce_student"]).run()
    assert names(figures(app)[1]) == ["WSL weight", "CE student"]


def test_any_other_method_shows_the_measured_gradient_ratio(methods):
    store, runs = methods
    app = open_page("inspect", run=runs["rco"])
    rescaling = figures(app)[0]
    samples = load_run(runs["rco"], store.home).samples(2)
    assert np.allclose(rescaling["data"][0]["y"], samples.logit_grad_ratio_true, atol=1e-2)
    assert rescaling["layout"]["xaxis"]["title"]["text"] == "difficulty: 1 - p(true class)"


def test_calibration_of_the_test_split_and_a_test_sample(methods):
    store, runs = methods
    app = open_page("inspect", run=runs["rco"], view="calibration", sample="500")
    reliability, scatter, trajectory, point, top = figures(app)
    assert "ECE" in reliability["layout"]["title"]["text"]
    assert len(by_sample(scatter)) == 80 and names(scatter)[:2] == ["correct: yes", "correct: no"]
    assert app.number_input[0].value == 79  # clipped to the test split
    assert {"p(true class)", "confidence (top class)"} <= set(names(trajectory))
    assert scatter["layout"]["xaxis"]["title"]["text"] == "confidence (top class)"
    chosen = app.multiselect(key=f"inspect-values-{runs['rco']}-calibration")
    assert "predicted class" in chosen.options and chosen.value == ["p_true", "confidence"]
    assert app.query_params["split"] in ("test", ["test"])
    app.number_input[0].set_value(3).run()
    assert app.query_params["sample"] in ("3", ["3"]) and "Sample 3 of the test split" in app.subheader[0].value


def test_bias_and_variance_over_the_last_epochs_and_across_seeds(tiny):
    store = RunStore()
    first = store.create_run(tiny(method={"name": "wsl"}))
    second = store.create_run(tiny(method={"name": "wsl"}, seed=1))
    assert execute(first, store) == execute(second, store) == "done"
    app = open_page("inspect", run=first, view="bias_variance")
    assert "No bias-variance analysis" in app.info[0].value
    app.button(key="inspect-bv-run").click().run()
    assert not app.exception and store.analyses(first) == ["bias_variance.test.last5"]
    scatter = figures(app)[0]
    frame = store.analysis(first, "bias_variance.test.last5")
    assert np.allclose(by_sample(scatter), frame.bias) and len(frame) == 80
    # WSL's flag, from the teacher: two colours and a legend, not a colour bar
    assert names(scatter)[:2] == ["regularization sample: yes", "regularization sample: no"]
    assert not any(t.get("marker", {}).get("showscale") for t in scatter["data"])
    assert app.multiselect(key="inspect-bv-others").options == [second]
    app.multiselect(key="inspect-bv-others").set_value([second]).run()
    app.button(key="inspect-bv-runs").click().run()
    assert not app.exception and len(store.analyses(first)) == 2
    assert app.selectbox[1].value.startswith("bias_variance.test.runs-")


def test_a_run_that_does_not_exist_shows_another(methods):
    app = open_page("inspect", run="20200101-000000-abcdef")
    assert "which this page cannot use" in app.warning[0].value and figures(app)


@pytest.mark.parametrize(
    "event, sample",
    [
        ({"selection": {"points": [{"customdata": 12, "x": 0.1}]}}, 12),
        ({"selection": {"points": [{"customdata": [4]}]}}, 4),
        ({"selection": {"points": []}}, None),
        (None, None),
        ({"selection": {"points": [{"x": 0.3}]}}, None),
    ],
)
def test_a_clicked_point_names_its_sample(event, sample):
    assert clicked_sample(event) == sample
