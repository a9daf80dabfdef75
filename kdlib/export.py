"""A run exported to formats other tools read: Parquet tables and TensorBoard event files.

    kdlib export RUN --to parquet DIR       DIR/epochs.parquet   epoch, step and one column per epoch scalar
                                            DIR/steps.parquet    epoch, step and one column per step scalar
                                            DIR/samples_<split>.parquet   epoch, index and one column per key
                                            DIR/config.yaml      the run's config
    kdlib export RUN --to tensorboard DIR   event files: `step/<key>` at each logged step, `epoch/<key>` at
                                            the step the epoch ended at, and the config's settings as hparams

`export_run(store, run_id, to, folder)` does the same from Python. The per-sample tables are wide (one
column per key, as `RunStore.per_sample_frame` gives them): each key keeps its own type (labels stay
integers) and Parquet stores and compresses column by column; `LoadedRun.history()` has the long form.
Arrays of several values per sample (`probs`) stay in the run's epoch files, which safetensors opens.
The Parquet export reads the store alone (pandas and pyarrow, no torch); the TensorBoard one writes
through torch's SummaryWriter (the tensorboard package) with the names `kdlib.loggers` uses during a run.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pandas as pd
import yaml

from kdlib.store import RunStore

FORMATS = ("parquet", "tensorboard")


class ExportError(ValueError):
    """An export that cannot be written as asked (a format, a folder already holding event files)."""


def export_run(store: RunStore, run_id: str, to: str, folder: str | Path) -> list[Path]:
    """Write run `run_id` of `store` into `folder` as `to` (parquet or tensorboard); returns the files written."""
    if to not in FORMATS:
        raise ExportError(f"export to {to!r}: one of {', '.join(FORMATS)}")
    store.run(run_id)  # RunNotFound before any folder is made
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    return export_parquet(store, run_id, folder) if to == "parquet" else export_tensorboard(store, run_id, folder)


def export_parquet(store: RunStore, run_id: str, folder: Path) -> list[Path]:
    if not any(importlib.util.find_spec(engine) for engine in ("pyarrow", "fastparquet")):
        raise ExportError("--to parquet needs pyarrow: pip install pyarrow")
    tables = {"epochs": epoch_table(store, run_id), "steps": step_table(store, run_id)}
    tables |= {f"samples_{split}": store.per_sample_frame(run_id, split) for split in store.per_sample_splits(run_id)}
    written = []
    for name, table in tables.items():
        table.to_parquet(folder / f"{name}.parquet", index=False)
        written.append(folder / f"{name}.parquet")
    (folder / "config.yaml").write_text(store.run(run_id)["config"])
    return [*written, folder / "config.yaml"]


def epoch_table(store: RunStore, run_id: str) -> pd.DataFrame:
    """One row per finished epoch: epoch, the global step it ended at, one column per epoch scalar."""
    return _wide(store.metrics(run_id, scope="epoch"))


def step_table(store: RunStore, run_id: str) -> pd.DataFrame:
    """One row per logged step: epoch (-1 for a method's preparation), step, one column per step scalar."""
    return _wide(store.metrics(run_id, scope="step"))


def _wide(metrics: pd.DataFrame) -> pd.DataFrame:
    if metrics.empty:
        return pd.DataFrame({"epoch": pd.Series(dtype="int64"), "step": pd.Series(dtype="int64")})
    wide = metrics.groupby(["epoch", "step", "key"], sort=True).value.last().unstack("key")
    return wide.rename_axis(columns=None).reset_index()


def export_tensorboard(store: RunStore, run_id: str, folder: Path) -> list[Path]:
    from kdlib.loggers import config_hparams, tensorboard_writer, write_hparams

    if importlib.util.find_spec("tensorboard") is None:
        raise ExportError("--to tensorboard needs the tensorboard package: pip install tensorboard")
    if any(folder.glob("events.out.tfevents.*")):
        raise ExportError(f"{folder} already holds TensorBoard event files; export into an empty folder")
    metrics = store.metrics(run_id)
    writer = tensorboard_writer(folder)
    try:
        for scope, step, key, value, time in metrics[["scope", "step", "key", "value", "time"]].itertuples(index=False):
            walltime = None if time is None or math.isnan(time) else time  # stores older than metric times
            writer.add_scalar(f"{scope}/{key}", value, step, walltime=walltime)
        epoch_keys = metrics[metrics.scope == "epoch"].key.unique()
        hparams = config_hparams(yaml.safe_load(store.run(run_id)["config"]))
        write_hparams(writer, hparams, [f"epoch/{key}" for key in epoch_keys])
    finally:
        writer.close()
    return sorted(folder.glob("events.out.tfevents.*"))
