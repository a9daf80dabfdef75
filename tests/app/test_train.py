"""Train: a widget per param with its description as help, schedule editors, errors by the field, live runs."""

from __future__ import annotations

import os

import pytest

from kdlib.events import EpochEnded, StepLogged
from kdlib.methods import METHODS
from kdlib.runner import RunHandle
from kdlib.store import RunStore, StoreSink
from kdlib.teachers import teacher_run_config
from tests.app.conftest import figures, open_page, shown


def widget(app, key: str):
    return app.get_by_key(key) if hasattr(app, "get_by_key") else app.number_input(key=key)


def labels(app) -> set[str]:
    kinds = ("selectbox", "number_input", "text_input", "checkbox")
    return {w.label for kind in kinds for w in getattr(app, kind)}


def test_the_form_starts_on_toy2d_kd_with_help_from_the_field_descriptions():
    app = open_page("train")
    assert app.selectbox(key="train:data").value == "toy2d"
    assert app.selectbox(key="train:toy2d:method").value == "kd"
    temperature = app.number_input(key="train:toy2d:method.kd.temperature.constant.value")
    assert temperature.value == 4.0
    noise = app.number_input(key="train:toy2d:data.noise")
    assert noise.value == 0.25 and noise.help == "standard deviation of the Gaussian noise on each point"
    assert {"epochs", "batch size", "learning rate", "seed", "student model", "teacher model"} <= labels(app)
    assert not app.button(key="train-start").disabled
    assert [f["data"][0]["name"] for f in figures(app)] == ["temperature"]  # the schedule preview


@pytest.mark.parametrize("method", METHODS.names())
def test_every_field_of_every_method_has_a_widget(method):
    app = open_page("train", method=method)
    params = METHODS.get(method).Params
    shown = labels(app) | {m.value.strip("*") for m in app.markdown}
    assert set(params.model_fields) - {"name"} <= shown
    assert bool(app.get("expander")) and not app.exception
    assert ("teacher model" in labels(app)) == METHODS.get(method).needs_teacher


def test_a_schedule_is_previewed_over_the_epochs():
    app = open_page("train", **{"method.temperature": "{kind: cosine, start: 8, end: 2}", "epochs": "5"})
    assert app.selectbox(key="train:toy2d:method.kd.temperature.kind").value == "cosine"
    curve = next(f for f in figures(app) if f["data"][0]["name"] == "temperature")["data"][0]
    assert curve["x"] == [0, 1, 2, 3, 4]
    assert curve["y"][0] == pytest.approx(8.0) and curve["y"][-1] == pytest.approx(2.0)


def test_a_temperature_schedule_below_zero_is_refused_next_to_the_field():
    app = open_page("train")
    app.selectbox(key="train:toy2d:method.kd.temperature.kind").set_value("linear").run()
    app.number_input(key="train:toy2d:method.kd.temperature.linear.e").set_value(-1.0).run()
    assert not app.exception
    errors = [shown(e.value) for e in app.error]
    assert "every value must be > 0; this schedule reaches -1.0" in errors  # under the schedule editor
    assert any(e.startswith("Fix these before starting") and "method.temperature" in e for e in errors)
    assert app.button(key="train-start").disabled


def test_a_bad_list_and_a_bad_number_are_named_by_their_fields():
    app = open_page("train")
    app.text_input(key="train:toy2d:student.mlp.hidden").input("4, wide").run()
    app.number_input(key="train:toy2d:epochs").set_value(0).run()
    errors = " ".join(shown(e.value) for e in app.error)
    assert "student.hidden" in errors and "epochs: Input should be greater than or equal to 1" in errors
    assert not app.exception and app.button(key="train-start").disabled


def test_the_form_lives_in_the_query_parameters_and_comes_back_from_them():
    app = open_page("train", **{"method.temperature": "8", "student.hidden": "[16]", "epochs": "12"})
    assert app.number_input(key="train:toy2d:method.kd.temperature.constant.value").value == 8.0
    assert app.text_input(key="train:toy2d:student.mlp.hidden").value == "[16]"
    assert app.number_input(key="train:toy2d:epochs").value == 12
    app.number_input(key="train:toy2d:method.kd.w_kd.constant.value").set_value(0.5).run()
    query = app.query_params
    assert query["method.temperature"] in ("8.0", ["8.0"]) and query["method.w_kd"] in ("0.5", ["0.5"])
    assert "batch_size" not in query  # values at their defaults stay out of the link


def test_other_data_switches_to_its_preset_models():
    app = open_page("train")
    app.selectbox(key="train:data").set_value("mnist1d").run()
    assert not app.exception
    assert app.selectbox(key="train:mnist1d:teacher.model").value == "cnn1d"
    assert app.text_input(key="train:mnist1d:student.mlp.hidden").value == "[128]"


def test_a_student_waiting_for_its_teacher_shows_the_teachers_curves(tiny):
    store = RunStore()
    config = tiny()
    student = store.create_run(config)
    store.update_run(student, status="running", pid=os.getpid())
    teacher = store.create_run(teacher_run_config(config), kind="teacher")
    store.update_run(teacher, status="running", pid=os.getpid())
    sink = StoreSink(store, teacher)
    sink.emit(StepLogged(0, 2, {"train.loss": 0.7}))
    sink.emit(EpochEnded(0, 4, {"train.loss": 0.6, "test.acc": 0.8}, {}))
    sink.close()
    app = open_page("train", run=student)
    assert "Training the teacher first" in app.info[0].value
    curves = figures(app)[-1]
    assert curves["layout"]["title"]["text"].startswith("teacher") and curves["data"][0]["y"] == [0.7]
    assert [b.label for b in app.button if b.key.endswith(student)] == ["Pause", "Resume", "Stop"]
    assert not app.button(key=f"pause-{student}").disabled


def test_a_2d_run_shows_its_curves_then_the_student_s_and_the_teacher_s_boundaries(trained):
    store, run_id = trained
    app = open_page("train", run=run_id)
    assert not app.exception
    titles = [f["layout"].get("title", {}).get("text") for f in figures(app)]
    last = store.epoch_metrics(run_id).index[-1] + 1
    # the schedule preview (its tab), the curves (the progress bar names the run), then both boundaries
    assert titles[1:4] == [None, f"student after epoch {last}", "teacher (mlp)"]
    student, teacher = figures(app)[2:4]
    assert student["data"][0]["type"] == "heatmap" and student["layout"]["height"] <= 260


def test_before_a_run_the_live_side_says_what_will_come():
    app = open_page("train")
    assert "decision boundaries" in app.info[0].value and [t.label for t in app.tabs] == [
        "Data", "Models", "Method", "Training"]


@pytest.mark.slow
def test_start_launches_a_run_that_appears_in_runs():
    app = open_page("train", epochs="3", **{"teacher.epochs": "3", "data.n_samples": "300"})
    app.button(key="train-start").click().run()
    assert not app.exception
    run_id = app.query_params["run"]
    run_id = run_id[0] if isinstance(run_id, list) else run_id
    assert app.get("progress")
    runs = open_page("runs")
    assert run_id in runs.dataframe[0].value.id.tolist()
    assert RunHandle(run_id, RunStore()).wait(timeout=180) == "done"
    config = RunStore().config(run_id)
    assert config.epochs == 3 and config.output.route.every == 1  # toy2d runs keep per-epoch weights
    done = open_page("train", run=run_id)
    assert "done" in done.get("progress")[0].proto.text
    titles = [f["layout"].get("title", {}).get("text") for f in figures(done)]
    assert {"the method's own scalars", "student after epoch 3", "teacher (mlp)"} <= set(titles)


def anchors_yaml(app) -> str:
    """The anchors section of the config the form would start (its YAML, shown below the form)."""
    text = app.code[0].value
    return text[text.index("anchors:") : text.index("temperature:")]


def test_rco_anchors_get_a_strategy_and_a_pick_of_the_teachers_saved_epochs():
    app = open_page("train", method="rco")
    prefix = "train:toy2d:method.rco.anchors"
    strategy = app.selectbox(key=f"{prefix}.kind")
    assert strategy.options == ["n evenly spaced", "chosen epochs", "greedy"] and strategy.value == "equal_interval"
    assert not [w for w in app.text_input if w.label == "anchors"]  # no YAML box
    strategy.set_value("list").run()
    pick = app.multiselect(key=f"{prefix}.list.teacher_epochs")
    assert pick.options == [str(e) for e in range(1, 21)]  # toy2d's teacher saves every one of its 20 epochs
    pick.set_value([10, 5]).run()
    assert not app.exception and not app.button(key="train-start").disabled
    assert "kind: list" in anchors_yaml(app) and "- 5\n" in anchors_yaml(app) and "- 10\n" in anchors_yaml(app)
    app.number_input(key="train:toy2d:teacher.epochs").set_value(8).run()  # a shorter route: 10 is no longer saved
    assert app.multiselect(key=f"{prefix}.list.teacher_epochs").options == [str(e) for e in [*range(1, 9), 10]]
    assert app.button(key="train-start").disabled and "10 is not on the teacher's route" in shown(app.error[0].value)


def test_rco_anchors_come_from_the_link_and_greedy_shows_its_numbers():
    app = open_page("train", method="rco", **{"method.anchors": "{kind: list, teacher_epochs: [4, 8]}"})
    prefix = "train:toy2d:method.rco.anchors"
    assert app.multiselect(key=f"{prefix}.list.teacher_epochs").value == [4, 8]
    app.selectbox(key=f"{prefix}.kind").set_value("greedy").run()
    assert app.number_input(key=f"{prefix}.greedy.rho").value == 2.0
    assert "kind: greedy" in anchors_yaml(app)
