"""The Jupyter widgets, driven as a notebook user would: set values, press buttons, read the figures."""

from __future__ import annotations

import pytest
from conftest import tiny_config

from kdlib import RunStore
from kdlib.runner import execute
from kdlib.validation import config_from
from kdlib.widgets import ControlPanel, LiveView, SampleInspector, ScheduleEditor, panel

TINY = {"toy2d": tiny_config()}  # a panel preset that trains in seconds


def finished_run(config) -> str:
    """A run executed in this process (no background worker to wait for)."""
    store = RunStore()
    run_id = store.create_run(config_from(config))
    assert execute(run_id, store) == "done"
    return run_id


def points(figure, name: str) -> int:
    return sum(len(t.x) for t in figure.data if t.name == name)


def test_schedule_editor_preview_follows_the_numbers():
    editor = ScheduleEditor("temperature", 4.0, epochs=10)
    assert editor.value == 4.0 and list(editor.preview.data[0].y) == [4.0] * 10
    editor.kind.value = "linear"
    editor.start.value, editor.end.value = 8.0, 2.0
    assert editor.value == {"kind": "linear", "start": 8.0, "end": 2.0, "start_epoch": 0, "end_epoch": None}
    assert editor.preview.data[0].y[0] == 8.0 and editor.preview.data[0].y[-1] == 2.0
    editor.value = {"kind": "step", "start": 0.9, "gamma": 0.5, "milestones": [3, 6]}
    assert editor.kind.value == "step" and editor.preview.data[0].y[3] == 0.45
    editor.milestones.value = "3, x"
    assert editor.curve() is None and "no step" in editor.error.value


def test_panel_fields_come_from_the_methods_params():
    controls = ControlPanel(method="wsl", presets=TINY)
    assert set(controls.editors) == {"temperature", "alpha", "w_ce"}
    assert "weighted soft term" in controls.editors["alpha"].kind.tooltip
    assert controls.editors["temperature"].value_slider.min > 0  # a temperature of 0 is refused
    controls.method.value = "pskd"
    assert set(controls.fields) == {"alpha_T", "buffer_dtype"} and controls.fields["alpha_T"].max == 1.0
    assert controls.teacher_epochs.layout.display == "none"  # PS-KD is its own teacher
    controls.method.value = "kd"
    controls.epochs.value = 5
    controls.editors["w_kd"].value = {"kind": "linear", "start": 0.0, "end": 0.9}
    assert [t.name for t in controls.preview.data] == ["temperature", "w_ce", "w_kd"]
    assert list(controls.preview.data[2].y) == pytest.approx([0.0, 0.225, 0.45, 0.675, 0.9])
    config = controls.config_dict()
    assert config["epochs"] == 5 and config["method"]["w_kd"]["kind"] == "linear"


def test_rco_anchors_are_a_strategy_and_a_pick_of_the_teachers_saved_epochs():
    controls = ControlPanel(method="rco", presets=TINY)
    anchors = controls.fields["anchors"]
    assert [label for label, _ in anchors.kind.options] == ["n evenly spaced", "chosen epochs", "greedy"]
    assert anchors.value == {"kind": "equal_interval", "num_anchors": None}
    anchors.kind.value = "list"
    controls.teacher_epochs.value = 6
    pick = anchors.fields["teacher_epochs"]
    assert list(pick.options) == [1, 2, 3, 4, 5, 6]  # the teacher saves every epoch
    pick.value = (4, 2)
    assert controls.config_dict()["method"]["anchors"] == {
        "kind": "list",
        "teacher_epochs": [2, 4],
        "student_epochs": None,
    }
    controls.teacher_epochs.value = 3  # a shorter route keeps the pick, for the config check to name
    assert list(anchors.fields["teacher_epochs"].options) == [1, 2, 3, 4] and anchors.value["teacher_epochs"] == [2, 4]
    anchors.kind.value = "greedy"
    assert anchors.value == {"kind": "greedy", "rho": 2.0, "stage_epochs": 5, "probe_size": 1000}


def test_invalid_settings_are_listed_and_nothing_starts():
    controls = ControlPanel(presets=TINY)
    controls.editors["temperature"].value = [[0, 4.0], [2, -1.0]]
    controls.launch_button.click()
    assert controls.handle is None and RunStore().runs().empty
    assert "method.temperature" in controls.message.value and "Not started" in controls.message.value


def test_live_view_and_inspector_on_a_finished_run():
    run_id = finished_run(tiny_config(method={"name": "ce"}, teacher=None))
    live = LiveView(run_id)
    assert not live.following and live.buttons["stop"].disabled and "done" in live.status.value
    assert points(live.figure, "test accuracy") == 3 and points(live.figure, "train loss (steps)") > 0
    assert live.progress.value == 1.0

    inspector = SampleInspector(run_id, index=5)
    assert inspector.epoch.value == 2 and set(inspector.split.options) == {"train", "val", "test"}
    assert inspector.key.value == "p_true_student" and "sample 5" in inspector.table.value
    assert [t.name for t in inspector.figure.data] == ["sample 5", "mean over the train split"]
    assert list(inspector.figure.data[0].y) == pytest.approx(inspector.run.trajectory(5).tolist())
    inspector.epoch.value = 0
    assert "epoch 0" in inspector.table.value and inspector.figure.layout.shapes[0].x0 == 0
    inspector.split.value = "test"
    assert inspector.key.value == "p_true" and inspector.figure.data[0].name == "sample 5"
    pick = inspector.extremes.options[1][1]
    inspector.extremes.value = pick
    assert inspector.index.value == pick and f"sample {pick}" in inspector.table.value


@pytest.mark.slow
def test_launch_button_starts_a_run_that_the_live_view_follows():
    ui = panel(presets=TINY)
    ui.controls.epochs.value = 3
    ui.controls.teacher_epochs.value = 2
    ui.controls.editors["temperature"].value_slider.value = 2.5
    ui.controls.launch_button.click()
    handle = ui.controls.handle
    assert handle is not None and handle.run_id in RunStore().runs().id.values
    assert ui.live is not None and ui.live.run_id == handle.run_id
    assert "Started" in ui.controls.message.value
    ui.live.stop_following()  # the test reads the store itself, below
    assert handle.wait(timeout=120) == "done"
    assert ui.live.refresh() == "done"
    assert points(ui.live.figure, "test accuracy") == 3 and points(ui.live.figure, "train loss (epoch mean)") == 3
    assert handle.metrics()["temperature"].iloc[-1] == 2.5


@pytest.mark.slow
def test_live_view_follows_in_the_background_and_stops_at_the_end():
    ui = panel(presets=TINY)
    ui.controls.method.value = "ce"
    ui.controls.launch_button.click()
    assert ui.live.following
    assert ui.controls.handle.wait(timeout=120) == "done"
    ui.live._thread.join(timeout=10)
    assert not ui.live.following and "done" in ui.live.status.value
    assert points(ui.live.figure, "test accuracy") == 3
