"""Learn: temperature and dark knowledge, on an example vector or a trained teacher's logits."""

from __future__ import annotations

import pytest

from tests.app.conftest import figures, open_page


def test_the_example_shows_softmax_at_each_temperature_and_the_entropy():
    app = open_page("temperature")
    assert app.selectbox(key="temperature-source").value == "example"
    assert app.slider(key="temperature-T").value == 4.0
    bars, entropy = figures(app)
    assert [t["name"] for t in bars["data"]] == ["T = 1", "T = 4"]
    assert bars["data"][0]["x"] == ["dog", "wolf", "cat", "car", "carrot"]
    assert sum(bars["data"][1]["y"]) == pytest.approx(1.0)
    assert bars["data"][0]["y"][0] > bars["data"][1]["y"][0]  # softer at T = 4
    assert entropy["data"][1]["x"] == [4.0]


def test_the_slider_and_comparison_live_in_the_link():
    app = open_page("temperature", T="10", compare="1,16")
    assert app.slider(key="temperature-T").value == 10.0
    assert app.multiselect(key="temperature-compare").value == [1.0, 16.0]
    assert [t["name"] for t in figures(app)[0]["data"]] == ["T = 1", "T = 10", "T = 16"]
    app.slider(key="temperature-T").set_value(2.5).run()
    assert app.query_params["T"] in ("2.5", ["2.5"])


def test_a_trained_teachers_test_sample_can_be_picked(trained):
    store, run_id = trained
    teacher = store.runs("teacher").id.iloc[0]
    app = open_page("temperature", source=teacher, sample="5")
    assert app.number_input(key=f"temperature-sample-{teacher}").value == 5
    assert "Test sample 5" in app.caption[0].value
    assert figures(app)[0]["data"][0]["x"] == ["0", "1"]


def test_the_button_opens_train_with_kd_at_the_chosen_temperature_on_ten_classes():
    app = open_page("temperature", T="6")
    app.button(key="temperature-train").click().run()
    assert not app.exception
    assert app.selectbox(key="train:data").value == "mnist1d"  # the claims board's setting (test_lessons.py)
    assert app.selectbox(key="train:mnist1d:method").value == "kd"
    assert app.number_input(key="train:mnist1d:method.kd.temperature.constant.value").value == 6.0
