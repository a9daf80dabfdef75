"""Loggers: sinks that stream a run's step and epoch scalars to TensorBoard or MLflow as the run goes.

A config's `loggers: [tensorboard]` (or `[{name: tensorboard, dir: tb}]`, `[{name: mlflow, ...}]`) adds
one sink per entry beside the store's (kdlib.runner). Both tools get the same names: `step/<key>` at
each logged step, `epoch/<key>` at the global step the epoch ended at (so both share one axis and a
resumed run's repeated epochs replace the first ones), and the config's settings as hyperparameters
(`method.temperature`, `optimizer.lr`, `batch_size`, ...). `kdlib.export` writes a finished run's
TensorBoard files with the same names. The packages are imported only when a logger is made.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from kdlib.events import EpochEnded, Event, RunEnded, RunStarted, StepLogged
from kdlib.spec import Section, context_folder, local_path

PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}  # a logger's name -> the package it needs


class LoggerSection(Section):
    """A tool that hears the run's step and epoch scalars as they come; a bare name is enough."""

    name: Literal["tensorboard", "mlflow"] = Field(description="tensorboard or mlflow (each needs its package)")
    dir: str | None = Field(
        None,
        description="tensorboard: a folder that gets one subfolder per run, `<dir>/<run id>`, relative to the "
        "config file's folder (null: the run's own folder, `<run folder>/tensorboard`)",
    )
    tracking_uri: str | None = Field(None, description="mlflow: where runs are tracked (null: MLflow's default)")
    experiment: str | None = Field(None, description="mlflow: the experiment the run goes into, made if new (null: kdlib)")

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("dir")
    @classmethod
    def _dir_absolute(cls, folder: str | None, info: ValidationInfo) -> str | None:
        return None if folder is None else local_path(folder, context_folder(info))

    @model_validator(mode="after")
    def _installed(self) -> LoggerSection:
        import importlib.util

        package = PACKAGES[self.name]
        if importlib.util.find_spec(package) is None:
            raise ValueError(f"the {self.name} logger needs the {package} package: pip install {package}")
        unused = {"tensorboard": ("tracking_uri", "experiment"), "mlflow": ("dir",)}[self.name]
        if given := [key for key in unused if getattr(self, key) is not None]:
            raise ValueError(f"{', '.join(given)}: not a setting of the {self.name} logger")
        return self


def logger_sinks(config, run_dir: Path, run_id: str) -> list:
    """One sink per entry of `config.loggers`, for the run `run_id` whose folder is `run_dir`."""
    hparams = config_hparams(config.to_dict())
    sinks = []
    for logger in config.loggers:
        if logger.name == "tensorboard":
            folder = Path(logger.dir) / run_id if logger.dir else run_dir / "tensorboard"
            sinks.append(TensorBoardSink(folder, hparams))
        else:
            sinks.append(MLflowSink(run_dir, config.run_name(), hparams, logger.tracking_uri, logger.experiment))
    return sinks


def config_hparams(config: dict) -> dict[str, int | float | str | bool]:
    """A run config's settings, flat: `{"method.temperature": 2.0, "optimizer.lr": 0.01, "batch_size": 32, ...}`.

    Nested sections give dotted names; lists become JSON text; unset (null) settings are left out."""
    flat = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, f"{path}.{key}" if path else str(key))
        elif isinstance(value, list):
            flat[path] = json.dumps(value)
        elif value is not None:
            flat[path] = value

    walk(config, "")
    return flat


def tensorboard_writer(folder: Path, purge_step: int | None = None):
    """A SummaryWriter into `folder`; readers drop what an earlier writer there logged at `purge_step` or later."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(folder), purge_step=purge_step)


def write_hparams(writer, hparams: dict, metrics: list[str]) -> None:
    """The settings of a run into the writer's own folder, with the scalar tags to show beside them.

    Unlike `SummaryWriter.add_hparams`, which writes into a new subfolder and logs the metrics again,
    this puts the settings beside the scalars already logged, as one TensorBoard run."""
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    for summary in hparams_summaries(hparams, dict.fromkeys(metrics, 0.0)):
        writer.file_writer.add_summary(summary)


class TensorBoardSink:
    """Writes the step and epoch scalars into TensorBoard event files as they come, and the settings at the end.

    A resumed run starts a new event file that tells readers to drop what the first one logged after the
    epoch it resumes from: the run logs those epochs again."""

    def __init__(self, folder: Path, hparams: dict) -> None:
        self.folder, self.hparams, self.writer, self.epoch_tags = Path(folder), hparams, None, []

    def emit(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            if self.writer is not None:
                self.writer.close()
            start_step = event.start_epoch * event.steps_per_epoch
            self.writer = tensorboard_writer(self.folder, purge_step=start_step + 1 if start_step else 0)
        elif self.writer is None:
            return
        elif isinstance(event, StepLogged | EpochEnded):
            scope = "step" if isinstance(event, StepLogged) else "epoch"
            for key, value in event.scalars.items():
                self.writer.add_scalar(f"{scope}/{key}", float(value), event.step, walltime=event.time)
            if scope == "epoch":
                self.epoch_tags = [f"epoch/{key}" for key in event.scalars]
                self.writer.flush()  # an epoch's scalars show in TensorBoard now, not at the writer's next flush
        elif isinstance(event, RunEnded):
            write_hparams(self.writer, self.hparams, self.epoch_tags)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class MLflowSink:
    """Logs the step and epoch scalars into an MLflow run as they come, the settings as its params, and its end.

    Calls to MLflow (a server, perhaps far away) are made by a thread of the sink's own, in order, so the
    training loop never waits for them; `close()` returns once all are made. MLflow mirrors the store:
    its first error stops the logging and is printed (in the worker's log), and the run goes on. The
    MLflow run's id is kept in the kdlib run's folder (`mlflow_run_id`), so a resumed run goes on in the
    same MLflow run."""

    STATUS = {"done": "FINISHED", "failed": "FAILED", "stopped": "KILLED"}

    def __init__(self, run_dir: Path, name: str, hparams: dict, tracking_uri: str | None, experiment: str | None):
        from mlflow import MlflowClient

        self.client, self.run_dir, self.name, self.hparams = MlflowClient(tracking_uri), Path(run_dir), name, hparams
        self.experiment, self.mlflow_run, self.error = experiment or "kdlib", None, None
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._log_all, name="kdlib-mlflow", daemon=True)
        self._thread.start()

    def emit(self, event: Event) -> None:
        self._queue.put(event)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self.error is not None:
            error, self.error = self.error, None
            print(f"kdlib: logging to MLflow stopped at its first error ({type(error).__name__}: {error}); "
                  f"the store has every scalar: `kdlib export {self.run_dir.name} --to ...`", file=sys.stderr)

    def _log_all(self) -> None:
        while (event := self._queue.get()) is not None:
            if self.error is None:
                try:
                    self._log(event)
                except Exception as error:  # noqa: BLE001 - told by close(); the run goes on
                    self.error = error

    def _log(self, event: Event) -> None:
        from mlflow.entities import Metric, Param

        if isinstance(event, RunStarted) and self.mlflow_run is None:
            self.mlflow_run = self._mlflow_run()
            params = [Param(key, str(value)) for key, value in self.hparams.items()]
            for start in range(0, len(params), 100):  # MLflow takes at most 100 params a call
                self.client.log_batch(self.mlflow_run, params=params[start : start + 100])
        elif self.mlflow_run is None:
            return
        elif isinstance(event, StepLogged | EpochEnded):
            scope = "step" if isinstance(event, StepLogged) else "epoch"
            stamp = int(event.time * 1000)
            metrics = [Metric(f"{scope}/{k}", float(v), stamp, event.step) for k, v in event.scalars.items()]
            for start in range(0, len(metrics), 1000):  # and at most 1000 metrics
                self.client.log_batch(self.mlflow_run, metrics=metrics[start : start + 1000])
        elif isinstance(event, RunEnded):
            self.client.set_terminated(self.mlflow_run, self.STATUS.get(event.status, "FAILED"))

    def _mlflow_run(self) -> str:
        """The MLflow run of this kdlib run: the one it started before it was resumed, else a new one."""
        kept = self.run_dir / "mlflow_run_id"
        if kept.exists():
            run_id = kept.read_text().strip()
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        experiment = self.client.get_experiment_by_name(self.experiment)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(self.experiment)
        run_id = self.client.create_run(experiment_id, run_name=self.name, tags={"kdlib.run": self.run_dir.name}).info.run_id
        kept.write_text(run_id)
        return run_id
