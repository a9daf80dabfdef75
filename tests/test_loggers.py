"""A config's `loggers:` streams the run's scalars to TensorBoard (and MLflow) through the sink interface."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
import yaml

from kdlib.config import ConfigError
from kdlib.events import EpochEnded, RunEnded, RunStarted, StepLogged
from kdlib.loggers import MLflowSink, config_hparams
from kdlib.runner import execute
from kdlib.store import RunStore
from kdlib.validation import load_config, validate_config
from tests.conftest import StopAfter, tiny_config
from tests.test_export import hparams, scalars, stored


def test_a_run_with_loggers_tensorboard_writes_its_scalars_into_its_folder_as_it_goes(tiny):
    store = RunStore()
    run_id = store.create_run(tiny(loggers=["tensorboard"]))
    assert execute(run_id, store) == "done"
    folder = store.run_dir(run_id) / "tensorboard"
    assert scalars(folder) == stored(store, run_id)  # what the store holds, step for step
    assert hparams(folder)["method.temperature"] == 2.0
    teacher = store.runs("teacher").id.iloc[0]  # the teacher's run has no loggers of its own
    assert not (store.run_dir(teacher) / "tensorboard").exists()


def test_a_resumed_run_s_tensorboard_files_read_as_one_run_without_the_epochs_it_did_again(tiny):
    store = RunStore()
    run_id = store.create_run(tiny(method={"name": "ce"}, loggers=["tensorboard"]))
    assert execute(run_id, store, own_sinks=[StopAfter(store, run_id, epoch=0)]) == "stopped"
    assert execute(run_id, store) == "done"  # resumes after epoch 0: epochs 1 and 2 again
    folder = store.run_dir(run_id) / "tensorboard"
    assert len(list(folder.glob("events.out.tfevents.*"))) == 2
    read = scalars(folder)
    assert read == stored(store, run_id) and [step for step, _ in read["epoch/test.acc"]] == [9, 18, 27]


def test_a_tensorboard_dir_is_a_folder_of_runs_relative_to_the_config(tmp_path):
    path = tmp_path / "configs" / "run.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(tiny_config(method={"name": "ce"}, loggers=[{"name": "tensorboard", "dir": "../tb"}])))
    config = load_config(path)
    assert config.loggers[0].dir == str(tmp_path / "tb")
    store = RunStore()
    run_id = store.create_run(config)
    assert execute(run_id, store) == "done"
    assert scalars(tmp_path / "tb" / run_id) == stored(store, run_id)


def test_a_logger_whose_package_is_missing_is_refused_naming_the_package(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"loggers\.0: the mlflow logger needs the mlflow package: pip install mlflow"):
        validate_config(tiny_config(loggers=["mlflow"]))
    with pytest.raises(ConfigError, match="tracking_uri: not a setting of the tensorboard logger"):
        validate_config(tiny_config(loggers=[{"name": "tensorboard", "tracking_uri": "file:/tmp"}]))
    with pytest.raises(ConfigError, match="loggers.0.name"):
        validate_config(tiny_config(loggers=["wandb"]))


def test_config_hparams_are_the_settings_flat():
    config = {"method": {"name": "kd", "temperature": 4.0}, "batch_size": 32, "student": {"hidden": [8]},
              "teacher": None, "output": {"name": None}}  # fmt: skip
    assert config_hparams(config) == {"method.name": "kd", "method.temperature": 4.0, "batch_size": 32,
                                      "student.hidden": "[8]"}  # fmt: skip


class FakeClient:
    """What MLflowSink asks of `mlflow.MlflowClient`, recorded."""

    calls: list = []

    def __init__(self, tracking_uri=None):
        self.calls.append(("client", tracking_uri))

    def get_experiment_by_name(self, name):
        return None

    def create_experiment(self, name):
        self.calls.append(("experiment", name))
        return "7"

    def create_run(self, experiment_id, run_name=None, tags=None):
        self.calls.append(("run", experiment_id, run_name, tags))
        return types.SimpleNamespace(info=types.SimpleNamespace(run_id="mlflow-1"))

    def update_run(self, run_id, status=None):
        self.calls.append(("update", run_id, status))

    def log_batch(self, run_id, metrics=(), params=()):
        self.calls.append(("batch", run_id, [(m.key, m.value, m.step) for m in metrics], [(p.key, p.value) for p in params]))

    def set_terminated(self, run_id, status=None):
        self.calls.append(("end", run_id, status))


@pytest.fixture
def fake_mlflow(monkeypatch):
    entities = types.ModuleType("mlflow.entities")
    entities.Metric = lambda key, value, timestamp, step: types.SimpleNamespace(key=key, value=value, step=step)
    entities.Param = lambda key, value: types.SimpleNamespace(key=key, value=value)
    mlflow = types.ModuleType("mlflow")
    mlflow.MlflowClient, mlflow.entities = FakeClient, entities
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    monkeypatch.setitem(sys.modules, "mlflow.entities", entities)
    FakeClient.calls = []
    return FakeClient.calls


def test_the_mlflow_sink_logs_params_scalars_and_the_end_and_a_resumed_run_goes_on_in_the_same_mlflow_run(
    fake_mlflow, tmp_path
):
    sink = MLflowSink(tmp_path, "kd mlp on toy2d", {"method.temperature": 2.0}, "file:/somewhere", None)
    sink.emit(RunStarted(3, 0, 9, "cpu", 280))
    sink.emit(StepLogged(0, 2, {"train.loss": 0.5}))
    sink.emit(EpochEnded(0, 9, {"test.acc": 0.75}))
    sink.emit(RunEnded("stopped"))
    sink.close()
    assert fake_mlflow == [
        ("client", "file:/somewhere"),
        ("experiment", "kdlib"),
        ("run", "7", "kd mlp on toy2d", {"kdlib.run": tmp_path.name}),
        ("batch", "mlflow-1", [], [("method.temperature", "2.0")]),
        ("batch", "mlflow-1", [("step/train.loss", 0.5, 2)], []),
        ("batch", "mlflow-1", [("epoch/test.acc", 0.75, 9)], []),
        ("end", "mlflow-1", "KILLED"),
    ]
    fake_mlflow.clear()
    resumed = MLflowSink(tmp_path, "kd mlp on toy2d", {"method.temperature": 2.0}, None, None)
    resumed.emit(RunStarted(3, 1, 9, "cpu", 280))
    resumed.emit(RunEnded("done"))
    resumed.close()
    assert fake_mlflow[1] == ("update", "mlflow-1", "RUNNING") and fake_mlflow[-1] == ("end", "mlflow-1", "FINISHED")


def test_an_mlflow_failure_stops_the_logging_and_is_told_and_the_run_goes_on(fake_mlflow, tmp_path, monkeypatch,
                                                                             capsys):
    monkeypatch.setattr(FakeClient, "log_batch", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("no server")))
    sink = MLflowSink(tmp_path, "run", {"lr": 0.1}, None, None)
    sink.emit(RunStarted(3, 0, 9, "cpu", 280))
    sink.emit(StepLogged(0, 2, {"train.loss": 0.5}))  # returns at once: the sink's thread calls MLflow
    sink.emit(RunEnded("done"))
    sink.close()
    assert fake_mlflow[-1][0] == "run"  # nothing after the first error
    assert "logging to MLflow stopped at its first error (ConnectionError: no server)" in capsys.readouterr().err
