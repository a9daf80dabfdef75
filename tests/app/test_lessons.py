"""Learn: the RCO, PS-KD and WSL lessons: closed forms under sliders, real runs, the claims board, a button to Train."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from app.claims import SETTINGS, TABLE, claims_table, setting_config
from kdlib.views import wsl_weight
from tests.app.conftest import figures, open_page


def test_pskd_sliders_draw_the_rescaling_and_live_in_the_link():
    app = open_page("lesson_pskd", alpha="0.5", prev="0.2", p="0.3")
    assert [app.slider(key=k).value for k in ("pskd-alpha", "pskd-prev", "pskd-p")] == [0.5, 0.2, 0.3]
    curve = figures(app)[0]
    assert curve["data"][-1]["y"] == [pytest.approx(0.428571, abs=1e-6)]  # METHODS.md: the hard sample
    assert app.metric[0].value == "0.429"
    assert "No PS-KD run" in app.info[0].value
    app.slider(key="pskd-p").set_value(0.95).run()
    assert app.query_params["p"] in ("0.95", ["0.95"]) and app.caption[0].value.startswith("pushed down")


def test_pskd_real_samples_and_the_button_to_train(methods):
    store, runs = methods
    app = open_page("lesson_pskd", alpha="0.7")
    assert app.selectbox(key="pskd-run").value == runs["pskd"] and len(app.selectbox(key="pskd-run").options) == 1
    assert len(figures(app)) == 2
    app.button(key="pskd-train").click().run()
    assert not app.exception
    assert app.selectbox(key="train:mnist1d:method").value == "pskd"
    assert app.number_input(key="train:mnist1d:method.pskd.alpha_T").value == 0.7


def test_wsl_weight_map_and_real_samples(methods):
    store, runs = methods
    app = open_page("lesson_wsl", ps="0.665241", pt="0.244728")
    weight_map, real, fraction = figures(app)
    z = np.array(weight_map["data"][0]["z"])
    assert z.shape == (99, 99) and np.allclose(
        z, wsl_weight(np.linspace(0.01, 0.99, 99)[None], np.linspace(0.01, 0.99, 99)[:, None])
    )
    assert app.metric[0].value == "0.251" and app.metric[1].value == "yes"  # METHODS.md's WSL example
    assert app.selectbox(key="wsl-run").value == runs["wsl"] and len(app.selectbox(key="wsl-run").options) == 1
    app.button(key="wsl-train").click().run()
    assert app.selectbox(key="train:mnist1d:method").value == "wsl"


def test_route_lesson_on_a_real_route_and_the_button_to_train(methods):
    store, runs = methods
    app = open_page("lesson_route")
    assert app.selectbox(key="route-lesson-run").value == runs["rco"]  # runs that follow anchors first
    (profile,) = figures(app)
    assert [t["name"] for t in profile["data"]] == ["student epoch 0", "student epoch 2", "anchors"]
    assert profile["data"][0]["x"] == [1, 2, 3]
    app.button(key="route-lesson-train").click().run()
    assert app.selectbox(key="train:mnist1d:method").value == "rco"


def test_route_lesson_without_a_route_offers_the_demo():
    app = open_page("lesson_route")
    assert "No run with a teacher's route" in app.info[0].value
    assert app.button(key="route-lesson-launch")


def test_route_lesson_offers_the_demo_beside_other_routed_runs(trained):
    app = open_page("lesson_route")  # the store's one routed run is KD on toy2d
    assert app.selectbox(key="route-lesson-run").options and not app.info
    assert app.button(key="route-lesson-launch").label.startswith("Launch the RCO demo")


# lesson page -> (its button, its claims setting, the page's query, what the query changes in the setting)
LESSONS = {
    "temperature": ("temperature-train", "temperature", {"T": "6"}, ["method.temperature=6.0"]),
    "lesson_route": ("route-lesson-train", "rco", {}, []),
    "lesson_pskd": ("pskd-train", "pskd", {"alpha": "0.7"}, ["method.alpha_T=0.7"]),
    "lesson_wsl": ("wsl-train", "wsl", {}, []),
}


@pytest.mark.parametrize("lesson", LESSONS)
def test_each_lessons_button_opens_train_on_exactly_its_claims_setting(lesson):
    button, setting, query, changes = LESSONS[lesson]
    app = open_page(lesson, **query)
    app.button(key=button).click().run()
    assert not app.exception, [e.value for e in app.exception]
    (code,) = app.code  # Train's "the run's config as YAML"
    shown, wanted = yaml.safe_load(code.value), setting_config(setting, changes).to_dict()
    for what in ("output", "probes"):  # the run's name and what it records, not how it trains
        shown.pop(what), wanted.pop(what)
    assert shown == wanted


def test_the_claims_table_is_read_row_by_row(tmp_path):
    path = tmp_path / "claims.md"
    path.write_text("`bench/claims.py`: 3 seeds.\n\n| id | claim |\n|---|---|\n| rco | RCO beats KD |\n| wsl | w |\n")
    assert claims_table(["rco"], path) == ("`bench/claims.py`: 3 seeds.", "| id | claim |\n|---|---|\n| rco | RCO beats KD |")
    assert claims_table(None, path)[1].count("\n") == 3 and claims_table(None, tmp_path / "none.md") is None


def test_every_setting_of_the_board_is_a_config_and_every_lesson_shows_its_rows():
    ids = [line.split("|")[1].strip() for line in claims_table(None)[1].splitlines()[2:]]
    assert {"temperature", "rco", "pskd-ece", "wsl"} <= set(ids), TABLE
    assert {path.stem for path in SETTINGS.glob("*.yaml")} >= {"temperature", "rco", "pskd", "wsl", "lsskd", "prokt"}
    for lesson, row in (("temperature", "temperature"), ("lesson_route", "rco"), ("lesson_pskd", "pskd-ece"),
                        ("lesson_wsl", "wsl-weights")):
        app = open_page(lesson)
        assert any(m.value.splitlines()[2:3] and f"| {row} |" in m.value for m in app.markdown), lesson
    assert any("| lsskd |" in m.value for m in open_page().markdown)  # Home's Learn: the whole board
