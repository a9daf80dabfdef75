"""The store's per-sample registry, trajectory reads, metric times, and stores written by older versions."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file

from kdlib.events import EpochEnded, RunStarted, StepLogged
from kdlib.store import RunStore, StoreSink, compact, read_epoch_index, write_epoch_file

KDA_SAMPLES = Path(__file__).parent / "fixtures" / "kda_samples"  # epoch files of `arrays(0..3)` by kdlib 0.x's writer


def arrays(epoch: int, n: int = 50, classes: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(epoch)
    found = {
        "train.p_true_student": rng.random(n),
        "train.label": np.arange(n) % classes,
        "test.p_true": rng.random(n // 2),
    }
    if epoch % 2:  # full probabilities at a stride, as with probes.probs_every: 2
        found["test.probs"] = rng.dirichlet(np.ones(classes), n // 2)
    return found


def write_run(store: RunStore, tiny, epochs: int = 4) -> str:
    run_id = store.create_run(tiny(epochs=epochs))
    sink = StoreSink(store, run_id)
    sink.emit(RunStarted(epochs, 0, 2, "cpu", 50))
    for epoch in range(epochs):
        sink.emit(StepLogged(epoch, 2 * epoch + 1, {"train.loss": 1.0 / (epoch + 1)}))
        sink.emit(EpochEnded(epoch, 2 * epoch + 2, {"test.acc": 0.5}, arrays(epoch)))
    sink.close()
    return run_id


def test_per_sample_arrays_are_registered_and_read_back_one_sample_at_a_time(tiny):
    store = RunStore()
    run_id = write_run(store, tiny)
    assert store.per_sample_epochs(run_id) == [0, 1, 2, 3]
    assert store.per_sample_epochs(run_id, split="test", key="probs") == [1, 3]
    with sqlite3.connect(store.path) as db:
        layout = pd.read_sql_query("SELECT dtype, shape FROM samples WHERE key = 'probs'", db)
    assert layout.to_dict("list") == {"dtype": ["<f2", "<f2"], "shape": ["25,4", "25,4"]}

    fresh = RunStore(store.home)  # nothing cached in Python
    epoch_2 = fresh.per_sample(run_id, 2)
    assert sorted(epoch_2) == ["label", "p_true_student"]
    assert np.array_equal(epoch_2["p_true_student"], arrays(2)["train.p_true_student"].astype(np.float16))

    trajectory = fresh.trajectory(run_id, "p_true_student", 7)
    expected = [np.float16(arrays(e)["train.p_true_student"][7]) for e in range(4)]
    assert trajectory.index.tolist() == [0, 1, 2, 3] and trajectory.tolist() == pytest.approx(expected)
    assert fresh.trajectory(run_id, "label", -1).tolist() == [1.0] * 4  # numpy's negative indices

    probs = fresh.trajectory(run_id, "probs", 3, split="test")  # [epochs, classes]
    assert probs.shape == (2, 4) and probs.index.tolist() == [1, 3]
    assert probs.loc[3].to_numpy() == pytest.approx(arrays(3)["test.probs"][3], abs=1e-3)
    assert fresh.trajectory(run_id, "nope", 0).empty
    with pytest.raises(IndexError):
        fresh.trajectory(run_id, "p_true_student", 50)
    with pytest.raises(KeyError, match=r"epochs \[0, 1, 2, 3\]"):
        fresh.per_sample(run_id, 9)


def test_truncate_forgets_folders_and_registry_rows_from_an_epoch_on(tiny):
    store = RunStore()
    run_id = write_run(store, tiny)
    store.truncate(run_id, 2)
    assert store.per_sample_epochs(run_id) == [0, 1]
    assert sorted(p.name for p in store.samples_dir(run_id).iterdir()) == ["epoch_0000.safetensors", "epoch_0001.safetensors"]
    assert list(store.epoch_metrics(run_id).index) == [0, 1]
    store.delete_run(run_id)
    assert store.per_sample_epochs(run_id) == []


def test_metrics_carry_the_time_they_were_produced(tiny):
    store = RunStore()
    run_id = store.create_run(tiny())
    produced = time.time() - 5  # an event made 5 s before the writer saw it
    sink = StoreSink(store, run_id)
    sink.emit(StepLogged(0, 1, {"train.loss": 1.0}, time=produced))
    sink.emit(StepLogged(0, 2, {"train.loss": 0.9}))
    sink.flush()  # written once flush returns
    times = store.metrics(run_id).time.tolist()
    assert times[0] == pytest.approx(produced) and time.time() - 5 < times[1] <= time.time()
    sink.close()


def test_step_scalars_logged_in_quick_succession_are_committed_together_and_soon(tiny, monkeypatch):
    store = RunStore()
    run_id = store.create_run(tiny())
    commits = []
    insert = StoreSink._insert_metrics
    monkeypatch.setattr(StoreSink, "_insert_metrics", staticmethod(lambda db, rows: (commits.append(len(rows)),
                                                                                    insert(db, rows))))
    sink = StoreSink(store, run_id)
    for step in range(1, 4):
        sink.emit(StepLogged(0, step, {"train.loss": 1.0 / step, "lr": 0.1}))
    emitted = time.monotonic()
    while len(store.metrics(run_id)) < 6:  # nothing else comes: they are written within STEP_DELAY
        assert time.monotonic() - emitted < 5 * StoreSink.STEP_DELAY + 1.0
        time.sleep(0.01)
    # the first at once (a live view's first point), the two that came on its heels together
    assert commits == [2, 4] and store.metrics(run_id).step.tolist() == [1, 1, 2, 2, 3, 3]
    sink.emit(StepLogged(0, 4, {"train.loss": 0.2}))
    sink.emit(EpochEnded(0, 4, {"test.acc": 0.5}, {}))  # comes after the waiting step, in order
    sink.flush()
    assert commits == [2, 4, 1, 1] and store.metrics(run_id).step.tolist() == [1, 1, 2, 2, 3, 3, 4, 4]
    assert store.metrics(run_id).scope.tolist()[-2:] == ["step", "epoch"]
    sink.close()


def test_a_failed_commit_of_step_scalars_is_raised_and_the_writer_still_ends(tiny, monkeypatch):
    store = RunStore()
    run_id = store.create_run(tiny())

    def locked(db, rows):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(StoreSink, "_insert_metrics", staticmethod(locked))
    sink = StoreSink(store, run_id)
    sink.emit(StepLogged(0, 1, {"train.loss": 1.0}))
    with pytest.raises(RuntimeError, match="database is locked"):
        sink.flush()  # returns (with the error) rather than waiting for ever
    # the error was handed over once; the writer goes on and ends
    sink.close()
    assert not sink._thread.is_alive()


OLD_SCHEMA = """
CREATE TABLE runs (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL, method TEXT, config TEXT NOT NULL,
    status TEXT NOT NULL, control TEXT NOT NULL DEFAULT 'run', created REAL NOT NULL, started REAL, ended REAL,
    error TEXT, pid INTEGER, epoch INTEGER, total_epochs INTEGER, steps_per_epoch INTEGER, device TEXT
);
CREATE TABLE metrics (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, scope TEXT NOT NULL,
    epoch INTEGER NOT NULL, step INTEGER NOT NULL, key TEXT NOT NULL, value REAL
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, time REAL NOT NULL, kind TEXT NOT NULL, message TEXT
);
INSERT INTO metrics (run_id, scope, epoch, step, key, value) VALUES ('old', 'epoch', 0, 2, 'test.acc', 0.5);
"""


def test_a_store_written_before_the_registry_and_metric_times_still_reads(kdlib_home, tiny):
    kdlib_home.mkdir(parents=True)
    with sqlite3.connect(kdlib_home / "store.sqlite") as db:
        db.executescript(OLD_SCHEMA)
    store = RunStore()  # adds what the old store lacks
    assert store.metrics("old").time.isna().all() and store.metrics("old").value.tolist() == [0.5]

    run_id = store.create_run(tiny(epochs=4))
    for epoch in range(4):  # as an older kdlib left it: a folder of .npy files per epoch, no registry rows
        folder = store.samples_dir(run_id) / f"epoch_{epoch:04d}"
        folder.mkdir(parents=True)
        for name, values in arrays(epoch).items():
            np.save(folder / f"{name}.npy", compact(values))
    probs = np.asfortranarray(arrays(3)["test.probs"])  # a layout kdlib never writes, read all the same
    np.save(store.samples_dir(run_id) / "epoch_0003" / "test.probs.npy", probs)
    assert np.array_equal(store.per_sample(run_id, 2)["p_true_student"], compact(arrays(2)["train.p_true_student"]))
    assert store.trajectory(run_id, "p_true_student", 3).index.tolist() == [0, 1, 2, 3]
    assert store.per_sample_epochs(run_id, split="test", key="probs") == [1, 3]
    assert store.trajectory(run_id, "probs", 2, split="test").loc[3].tolist() == pytest.approx(probs[2])

    with sqlite3.connect(store.path) as db:
        db.execute("DELETE FROM samples")
    store.truncate(run_id, 3)  # a resumed old run keeps its earlier epochs in the registry
    assert store.per_sample_epochs(run_id) == [0, 1, 2]


def test_an_epoch_file_is_a_safetensors_file_that_says_where_each_array_is(tmp_path):
    written = {
        "train.kl": np.linspace(0, 1, 7, dtype=np.float16),
        "train.label": np.arange(7, dtype=np.int16),
        "test.probs": np.eye(3, dtype=np.float32),
        "test.empty": np.zeros(0, dtype=np.float16),
        "probe.flag": np.array([True, False, True]),
        "probe.big": np.arange(3, dtype=">i8"),  # stored little-endian, as safetensors is
    }
    path = tmp_path / "epoch_0000.safetensors"
    layout = write_epoch_file(path, written)
    assert read_epoch_index(path) == layout
    opened = load_file(path)
    assert sorted(opened) == sorted(written)
    raw = path.read_bytes()
    assert (8 + int.from_bytes(raw[:8], "little")) % 64 == 0  # the data start at a multiple of 64
    for name, dtype, shape, offset in layout:
        dims = tuple(int(n) for n in shape.split(",") if n)
        assert offset % np.dtype(dtype).itemsize == 0  # each array aligned to its dtype
        values = np.frombuffer(raw, dtype, count=int(np.prod(dims)), offset=offset).reshape(dims)
        assert np.array_equal(values, written[name]) and np.array_equal(opened[name], written[name])
        assert values.dtype == opened[name].dtype == written[name].dtype.newbyteorder("<")
    with pytest.raises(ValueError, match="not a kdlib epoch file"):
        (tmp_path / "other.safetensors").write_bytes(b"something else")
        read_epoch_index(tmp_path / "other.safetensors")


def test_a_run_s_epoch_files_open_with_safetensors(tiny):
    store = RunStore()
    run_id = write_run(store, tiny)
    opened = load_file(store.samples_dir(run_id) / "epoch_0003.safetensors")
    assert sorted(opened) == ["test.p_true", "test.probs", "train.label", "train.p_true_student"]
    for name, values in arrays(3).items():
        assert np.array_equal(opened[name], compact(values))  # float16, labels int16: as the store keeps them


def test_a_store_of_kda_epoch_files_still_reads_and_resumes_into_safetensors(tiny):
    store = RunStore()
    run_id = store.create_run(tiny(epochs=6))
    shutil.copytree(KDA_SAMPLES, store.samples_dir(run_id))  # no registry rows: registered when first read
    assert store.per_sample_epochs(run_id) == [0, 1, 2, 3]
    assert store.per_sample_epochs(run_id, split="test", key="probs") == [1, 3]
    assert np.array_equal(store.per_sample(run_id, 2)["p_true_student"], compact(arrays(2)["train.p_true_student"]))
    expected = [np.float16(arrays(e)["train.p_true_student"][7]) for e in range(4)]
    assert store.trajectory(run_id, "p_true_student", 7).tolist() == pytest.approx(expected)
    assert store.trajectory(run_id, "probs", 3, split="test").loc[3].tolist() == pytest.approx(
        arrays(3)["test.probs"][3], abs=1e-3
    )

    store.truncate(run_id, 3)  # resumed after epoch 2: later epochs come in the new format
    store.write_per_sample(run_id, 3, arrays(3))
    assert sorted(p.name for p in store.samples_dir(run_id).iterdir()) == [
        "epoch_0000.kda", "epoch_0001.kda", "epoch_0002.kda", "epoch_0003.safetensors"]  # fmt: skip
    assert RunStore(store.home).trajectory(run_id, "p_true_student", 7).tolist() == pytest.approx(expected)


def test_a_store_whose_registry_was_lost_registers_its_epoch_files_again(tiny):
    store = RunStore()
    run_id = write_run(store, tiny)
    before = store.trajectory(run_id, "p_true_student", 4)
    with sqlite3.connect(store.path) as db:
        db.execute("DELETE FROM samples")
    fresh = RunStore(store.home)
    assert fresh.per_sample_epochs(run_id, split="test", key="probs") == [1, 3]
    assert fresh.trajectory(run_id, "p_true_student", 4).equals(before)
    assert np.array_equal(fresh.per_sample(run_id, 3, "test")["probs"], compact(arrays(3)["test.probs"]))


def test_an_array_of_python_objects_or_text_is_refused_by_name(tmp_path):
    with pytest.raises(TypeError, match="'train.o' holds Python objects"):
        write_epoch_file(tmp_path / "epoch_0000.safetensors", {"train.o": np.array([None, 1], dtype=object)})
    with pytest.raises(TypeError, match="'train.name' is <U1, which an epoch file cannot hold"):
        write_epoch_file(tmp_path / "epoch_0000.safetensors", {"train.name": np.array(["a", "b"])})


def test_a_resumed_run_removes_what_a_killed_writer_left_half_written(tiny):
    store = RunStore()
    run_id = write_run(store, tiny)
    stale = store.samples_dir(run_id) / ".epoch_0004.safetensors.123-abcdef.tmp"
    stale.write_bytes(b"half an epoch")
    store.truncate(run_id, 4)
    assert not stale.exists() and store.per_sample_epochs(run_id) == [0, 1, 2, 3]


def test_an_epoch_read_takes_each_array_from_its_own_file(tiny):
    """An old store's epoch folder beside a newer epoch file: each registry row names where its array is."""
    store = RunStore()
    run_id = write_run(store, tiny, epochs=1)
    folder = store.samples_dir(run_id) / "epoch_0000"
    folder.mkdir()
    np.save(folder / "train.old_key.npy", np.arange(50, dtype=np.int16))
    store._register(run_id, [folder])
    epoch = store.per_sample(run_id, 0)
    assert sorted(epoch) == ["label", "old_key", "p_true_student"]
    assert epoch["old_key"].tolist() == list(range(50)) and epoch["label"].tolist() == [i % 4 for i in range(50)]
