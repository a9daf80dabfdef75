"""Tune while it trains: `kdlib set`, RunHandle.set, and the changes kept in the run's config."""

from __future__ import annotations

import subprocess
import sys
import time
from functools import partial

import pandas as pd
import pytest
import yaml

from kdlib.events import EpochEnded, MemorySink, ParamsChanged, StepLogged
from kdlib.optim import lr_factor
from kdlib.runner import RunHandle, execute, launch
from kdlib.schedules import Tuned, tuned, value_at_step
from kdlib.store import RunStore
from kdlib.tuning import TuningRefused, check_changes, slider_range, tunables
from kdlib.validation import config_from, validate_config
from tests.conftest import tiny_config


def kdlib_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kdlib", *args], capture_output=True, text=True, timeout=120)


class At:
    """A sink that calls `action()` once, when the run's own events reach epoch `epoch` (at its end), or its
    global step `step` (a logged step)."""

    def __init__(self, action, epoch: int | None = None, step: int | None = None) -> None:
        self.action, self.epoch, self.step, self.done = action, epoch, step, False

    def emit(self, event) -> None:
        hit = (isinstance(event, EpochEnded) and event.epoch == self.epoch) or (
            isinstance(event, StepLogged) and event.step == self.step)
        if hit and not self.done:
            self.done = True
            self.action()

    def close(self) -> None:
        pass


# --- the schedule a change leaves, and the checks at the door --------------------------------------------


def test_a_tuned_schedule_is_its_base_until_the_change_then_the_new_value_from_that_step():
    schedule = tuned({"kind": "linear", "start": 4.0, "end": 0.0, "end_epoch": 4}, epoch=2, step=3, value=1.5)
    assert [value_at_step(schedule, 2, s, 5) for s in range(5)] == [2.0, 2.0, 2.0, 1.5, 1.5]
    assert value_at_step(schedule, 1, 9, 5) == 3.0 and schedule.value_at(3, 5) == 1.5
    again = tuned(schedule, epoch=2, step=1, value=0.5)  # a change before a kept one replaces it (a replayed epoch)
    assert [c.at() for c in again.changes] == [(2, 1)] and again.base == schedule.base
    config = validate_config(tiny_config(method__temperature=yaml.safe_load(yaml.safe_dump(
        tuned(2.0, 1, 4, 1.5).model_dump(mode="json")))))
    assert isinstance(config.method.temperature, Tuned)
    assert "base: 2.0" in config.to_yaml() and "lr_changes" not in config.to_yaml()
    with pytest.raises(ValueError, match="every value must be > 0"):
        validate_config(tiny_config(method__temperature={"kind": "tuned", "base": 2.0,
                                                          "changes": [{"epoch": 1, "value": -1.0}]}))


def test_what_a_run_may_tune_comes_from_its_method_and_lr_schedule(tiny):
    spec = tunables(tiny())
    assert spec["tunable"] == {"method.temperature": {"gt": 0}, "method.w_ce": {"ge": 0}, "method.w_kd": {"ge": 0},
                               "optimizer.lr": {"gt": 0.0}}
    torch_schedule = tunables(tiny(lr_schedule={"name": "MultiStepLR", "milestones": [2]}))
    assert "optimizer.lr" not in torch_schedule["tunable"] and "MultiStepLR" in torch_schedule["fixed"]["optimizer.lr"]
    assert "method.buffer_dtype" in tunables(tiny(method={"name": "pskd"}, teacher=None))["fixed"]
    assert slider_range({"gt": 0}, 2.0) == pytest.approx((0.08, 8.0)) and slider_range({"ge": 0, "le": 1}, 0.1) == (0, 1)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"method.temprature": 1.5}, "method.temprature: this run has no such field; did you mean 'method.temperature'?"),
        ({"method.name": "ce"}, "method.name: this run has no such field"),
        ({"optimizer.momentum": 0.5}, "optimizer.momentum: not tunable while the run trains: it is fixed"),
        ({"method.temperature": 0}, "method.temperature=0: the value must be > 0, e.g. method.temperature=1"),
        ({"method.temperature": float("inf")}, "give a finite number"),
        ({"method.temperature": "hot"}, "give a number"),
        ({"method.w_kd": True}, "give a number"),
        ({"optimizer.lr": -1}, "optimizer.lr=-1: the value must be > 0"),
    ],
)
def test_a_bad_change_is_refused_naming_the_field_and_the_fix(tiny, changes, message):
    with pytest.raises(TuningRefused) as refused:
        check_changes(tunables(tiny()), "running", "r1", changes)
    assert message in str(refused.value)


def test_a_change_is_refused_before_anything_is_written(kdlib_home, tiny):
    store = RunStore(kdlib_home)
    run_id = store.create_run(tiny())
    with pytest.raises(TuningRefused, match="it has not started"):
        RunHandle(run_id, store).set("temperature", 1.5)
    store.update_run(run_id, status="running")
    with pytest.raises(TuningRefused) as refused:  # one good, two bad: none written
        RunHandle(run_id, store).set({"temperature": 1.5, "w_kd": -1, "epochs": 3})
    assert "method.w_kd=-1" in str(refused.value) and "method.epochs" in str(refused.value)
    assert store.changes(run_id).empty
    store.update_run(run_id, status="done")
    with pytest.raises(TuningRefused, match="is done: a set changes a run while it trains"):
        RunHandle(run_id, store).set("temperature", 1.5)


# --- the engine: a set takes effect at the next step and is reproduced ------------------------------------


def test_kdlib_set_changes_a_running_kd_runs_temperature(kdlib_home, tiny):
    """The acceptance test: `kdlib set` while a KD run trains; its recorded temperature starts at the config's
    value and ends at the new one, and the change is a marker's place and part of the stored config."""
    store = RunStore(kdlib_home)
    run_id = store.create_run(tiny(epochs=4))
    said = []
    set_now = At(lambda: said.append(kdlib_cli("set", run_id[:-1], "method.temperature=1.5", "--home", str(store.home))),
                 epoch=0)
    assert execute(run_id, store, own_sinks=[set_now]) == "done"
    assert said[0].returncode == 0 and "asked method.temperature=1.5" in said[0].stdout, said[0].stderr
    temperature = store.epoch_metrics(run_id)["temperature"].tolist()
    assert temperature == [2.0, 1.5, 1.5, 1.5]
    change = store.changes(run_id).iloc[0]
    assert (change.state, change.epoch, change.epoch_step, change.step) == ("applied", 1, 0, 9)
    stored = yaml.safe_load(store.run(run_id)["config"])["method"]["temperature"]
    assert stored == {"kind": "tuned", "base": 2.0, "changes": [{"epoch": 1, "step": 0, "value": 1.5}]}
    assert yaml.safe_load((store.run_dir(run_id) / "config.yaml").read_text())["method"]["temperature"] == stored
    listed = kdlib_cli("set", run_id, "--home", str(store.home))
    assert "method.temperature = 1.5  (gt 0)" in listed.stdout and "from epoch 1, step 0" in listed.stdout
    assert "cannot" not in listed.stderr and kdlib_cli("set", run_id, "temperature=1", "--home",
                                                        str(store.home)).returncode == 2  # done now


def test_a_change_mid_epoch_is_replayed_exactly_on_resume_and_from_the_exported_config(kdlib_home, tiny, tmp_path):
    store = RunStore(kdlib_home)
    changes = {"temperature": 1.5, "optimizer.lr": 0.002}

    def run(config, tune: bool = True, stop_at: int | None = None) -> tuple[str, MemorySink, str]:
        run_id, heard = store.create_run(config), MemorySink()
        sinks = [heard, *([At(lambda: RunHandle(run_id, store).set(changes), step=12)] if tune else [])]
        if stop_at is not None:
            sinks.append(At(lambda: store.request(run_id, "stop"), step=stop_at))
        return run_id, heard, execute(run_id, store, own_sinks=sinks)

    first, heard, status = run(tiny(epochs=3))
    assert status == "done"
    event = heard.of(ParamsChanged)[0]  # asked at logged step 12 (9 steps an epoch): from the next, step 3 of epoch 1
    assert (event.epoch, event.epoch_step, event.step) == (1, 3, 12)
    assert event.values == {"method.temperature": 1.5, "optimizer.lr": 0.002}
    lr, factor = store.step_metrics(first)["lr"], partial(lr_factor, tiny().lr_schedule, 3, 9)
    # a logged step's lr is the one its last step used: the base 0.01 until step 11, 0.002 from step 12 on
    assert (lr.loc[12], lr.loc[14]) == pytest.approx((0.01 * factor(11), 0.002 * factor(13)))
    assert store.epoch_metrics(first)["temperature"].tolist() == [2.0, 1.5, 1.5]  # an epoch's value: its last step's
    expected = store.epoch_metrics(first)

    # stopped in the epoch of the change, after it: the resumed run replays that epoch from its stored config
    second, _, status = run(tiny(epochs=3), stop_at=16)
    assert status == "stopped" and store.run(second)["checkpoint_epoch"] == 0
    assert execute(second, store) == "done"
    pd.testing.assert_frame_equal(store.epoch_metrics(second), expected, rtol=1e-5)

    # the exported config trains the same run from scratch, nobody tuning it
    assert kdlib_cli("export", first, "--to", "parquet", str(tmp_path / "out"), "--home", str(store.home)).returncode == 0
    exported = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert exported["lr_changes"] == [{"epoch": 1, "step": 3, "value": 0.002}]
    third, _, status = run(config_from(exported), tune=False)
    assert status == "done"
    pd.testing.assert_frame_equal(store.epoch_metrics(third), expected, rtol=1e-5)


def test_a_set_on_a_paused_background_run_takes_effect_when_it_resumes(kdlib_home):
    handle = launch(tiny_config(epochs=40), home=kdlib_home)
    deadline = time.monotonic() + 120
    while handle.metrics().empty and handle.status in ("queued", "running"):
        assert time.monotonic() < deadline, "no epoch recorded in 120 s"
        time.sleep(0.1)
    handle.pause()
    while handle.status != "paused":
        assert time.monotonic() < deadline and handle.status in ("running", "paused"), handle.info["error"]
        time.sleep(0.1)
    said = kdlib_cli("set", handle.run_id, "temperature=1.5", "optimizer.lr=0.003")
    assert said.returncode == 0, said.stderr
    assert handle.store.changes(handle.run_id).state.tolist() == ["pending", "pending"]
    handle.resume()
    assert handle.wait(timeout=180) == "done"
    temperature = handle.metrics()["temperature"]
    assert temperature.iloc[0] == 2.0 and temperature.iloc[-1] == 1.5
    assert handle.store.changes(handle.run_id).state.tolist() == ["applied", "applied"]
    assert handle.store.config(handle.run_id).lr_changes[0].value == 0.003


def test_kdlib_set_imports_no_torch(kdlib_home):
    from tests.test_cli import imported_modules, stored_run

    run_id = stored_run(RunStore(kdlib_home), status="running")
    for args in (["set", run_id, "method.temperature=1.5"], ["set", run_id], ["set", "--help"]):
        result = subprocess.run([sys.executable, "-X", "importtime", "-m", "kdlib", *args], capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, (args, result.stderr[-2000:])
        assert "torch" not in imported_modules(result.stderr), args
    assert RunStore(kdlib_home).changes(run_id)[["path", "value", "state"]].values.tolist() == [
        ["method.temperature", 1.5, "pending"]]
    refused = kdlib_cli("set", run_id, "temperature=-1", "w_kd=x")
    assert refused.returncode == 2 and refused.stderr.count("error: ") == 2 and "method.w_kd='x'" in refused.stderr


def test_every_curve_has_a_line_where_a_change_took_effect():
    from kdlib import viz

    steps = pd.DataFrame({"train.loss": [1.0, 0.9, 0.8, 0.7]}, index=[2, 4, 6, 8])
    epochs = pd.DataFrame({"step": [9, 18], "train.loss": [0.9, 0.7], "test.acc": [0.5, 0.6], "temperature": [2.0, 1.5]},
                          index=pd.Index([0, 1], name="epoch"))
    changes = pd.DataFrame({"path": ["method.temperature", "optimizer.lr", "method.w_kd"], "value": [1.5, 0.002, 0.5],
                            "state": ["applied", "applied", "pending"], "step": [12, 12, None]})
    curves = viz.training_curves_figure(steps, epochs, changes=changes)
    # step 12 on the step axis; on the epoch axis (epoch e's point is the end of epoch e, 9 steps each) 12/9 - 1
    assert [(s.xref, s.x0) for s in curves.layout.shapes] == [("x", 12.0), ("x2", pytest.approx(1 / 3))]
    assert "temperature=1.5, optimizer.lr=0.002" in [a.text for a in curves.layout.annotations]
    scalars = viz.scalars_figure(epochs, ["temperature", "train.loss"], changes=changes)
    assert [(s.xref, s.x0) for s in scalars.layout.shapes] == [("x", pytest.approx(1 / 3)), ("x2", pytest.approx(1 / 3))]
    assert not viz.training_curves_figure(steps, epochs).layout.shapes


def test_the_forms_schedule_editor_shows_a_tuned_param_as_epoch_points():
    from kdlib.controls import schedule_start

    assert schedule_start(tuned(tuned(2.0, 1, 0, 1.5), 3, 4, 1.0)) == {"kind": "list",
                                                                        "points": [[0, 2.0], [1, 1.5], [4, 1.0]]}
    cosine = {"kind": "cosine", "start": 4.0, "end": 1.0}
    assert schedule_start(tuned(cosine, 1, 0, 1.5))["kind"] == "cosine"  # not a list: the schedule it started with
