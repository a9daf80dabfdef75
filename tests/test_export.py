"""A run in formats other tools read: Parquet tables, TensorBoard event files, and the long per-sample history."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from kdlib.__main__ import main
from kdlib.export import ExportError, export_run
from kdlib.runner import execute
from kdlib.store import RunStore
from kdlib.validation import validate_config
from kdlib.views import load_run
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny KD run on toy2d (and its teacher's run)."""
    store = RunStore(tmp_path_factory.mktemp("home"))
    run_id = store.create_run(validate_config(tiny_config()))
    assert execute(run_id, store) == "done"
    return store, run_id


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the event files in `folder`: (step, value) pairs, as TensorBoard reads them."""
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def stored(store: RunStore, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """The same from the store: tag `scope/key`, float32 as TensorBoard keeps values."""
    found = {}
    for row in store.metrics(run_id).itertuples():
        found.setdefault(f"{row.scope}/{row.key}", []).append((row.step, float(np.float32(row.value))))
    return found


def hparams(folder) -> dict:
    events = EventAccumulator(str(folder))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    values = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    return {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in values.items()}


def test_parquet_export_holds_the_scalars_and_one_wide_table_per_split(trained, tmp_path):
    store, run_id = trained
    written = export_run(store, run_id, "parquet", tmp_path / "out")
    assert {p.name for p in written} == {"epochs.parquet", "steps.parquet", "config.yaml", "samples_train.parquet",
                                         "samples_val.parquet", "samples_test.parquet", "samples_probe.parquet"}  # fmt: skip

    epochs = pd.read_parquet(tmp_path / "out" / "epochs.parquet")
    expected = store.epoch_metrics(run_id)
    assert epochs.epoch.tolist() == [0, 1, 2] and epochs.step.tolist() == expected.step.tolist()
    for key in expected.columns.drop("step"):
        assert epochs[key].tolist() == expected[key].tolist(), key
    steps = pd.read_parquet(tmp_path / "out" / "steps.parquet")
    logged = store.metrics(run_id, scope="step")
    for key, rows in logged.groupby("key"):
        assert steps.dropna(subset=[key])[["epoch", "step", key]].values.tolist() == rows[["epoch", "step", "value"]].values.tolist()

    train = pd.read_parquet(tmp_path / "out" / "samples_train.parquet")
    assert train.columns[:2].tolist() == ["epoch", "index"] and len(train) == 3 * 280  # 3 epochs of 280 training samples
    for epoch in (0, 2):
        arrays = store.per_sample(run_id, epoch)
        rows = train[train.epoch == epoch]
        assert rows["index"].tolist() == list(range(280))
        assert np.array_equal(rows.p_true_student.to_numpy(), arrays["p_true_student"].astype(np.float32))
        assert rows.label.dtype == np.int16 and np.array_equal(rows.label, arrays["label"])
    assert "probs" not in pd.read_parquet(tmp_path / "out" / "samples_test.parquet").columns  # 2-D: epoch files only


def test_tensorboard_export_holds_the_stored_scalars_and_the_config_as_hparams(trained, tmp_path):
    store, run_id = trained
    written = export_run(store, run_id, "tensorboard", tmp_path / "tb")
    assert len(written) == 1 and written[0].name.startswith("events.out.tfevents.")
    read = scalars(tmp_path / "tb")
    assert read == stored(store, run_id)
    assert {"step/train.loss", "epoch/test.acc", "epoch/temperature"} <= set(read)
    settings = hparams(tmp_path / "tb")
    assert settings["method.name"] == "kd" and settings["method.temperature"] == 2.0
    assert settings["optimizer.lr"] == 0.01 and settings["batch_size"] == 32 and settings["student.hidden"] == "[8]"
    with pytest.raises(ExportError, match="already holds TensorBoard event files"):
        export_run(store, run_id, "tensorboard", tmp_path / "tb")
    with pytest.raises(ExportError, match="one of parquet, tensorboard"):
        export_run(store, run_id, "csv", tmp_path / "csv")


def test_kdlib_export_names_the_run_by_a_prefix(trained, tmp_path, capsys):
    store, run_id = trained
    assert main(["export", run_id[:-1], "--to", "parquet", str(tmp_path / "out"), "--home", str(store.home)]) == 0
    assert f"{run_id} as parquet: 7 files" in capsys.readouterr().out
    assert (tmp_path / "out" / "samples_train.parquet").is_file()
    assert main(["export", "nope", "--to", "tensorboard", str(tmp_path / "tb"), "--home", str(store.home)]) == 2
    assert "no run 'nope'" in capsys.readouterr().err


def test_kdlib_export_to_parquet_imports_no_torch(trained, tmp_path):
    store, run_id = trained
    command = [sys.executable, "-X", "importtime", "-m", "kdlib", "export", run_id, "--to", "parquet", str(tmp_path)]
    result = subprocess.run([*command, "--home", str(store.home)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "pyarrow" in imported and not {m for m in imported if m.split(".")[0] == "torch"}


def test_history_is_every_epoch_s_per_sample_values_in_long_format(trained):
    store, run_id = trained
    run = load_run(run_id, store.home)
    history = run.history()
    assert history.columns.tolist() == ["epoch", "split", "index", "key", "value"]
    assert set(history.split) == {"train", "val", "test"}  # probe holds only 2-D probabilities
    weight = history.query("key == 'p_true_student' and index == 7").set_index("epoch").value  # the README's line
    assert weight.tolist() == run.trajectory(7, "p_true_student").tolist() and weight.index.tolist() == [0, 1, 2]
    labels = run.history("label", "test")
    assert set(labels.key) == {"label"} and len(labels) == 3 * 80
    assert labels[labels.epoch == 1].value.tolist() == store.per_sample(run_id, 1, "test")["label"].tolist()
    wide = run.history(["p_true_student"], "train").pivot(index="epoch", columns="index", values="value")
    assert wide.shape == (3, 280)
    assert run.history("nope").empty
