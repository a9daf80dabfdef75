"""Reliability: a run killed mid-epoch resumes with nothing missing or doubled, runs writing to one store
at once lose nothing, a checkpoint never runs ahead of the store, and every load is `weights_only`."""

from __future__ import annotations

import ast
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

import kdlib
from kdlib.events import CheckpointSaved, EpochEnded
from kdlib.store import RunStore
from kdlib.trainer import fit, load_checkpoint
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parent.parent


def _wait_for(condition, timeout: float = 60, what: str = "a condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _assert_complete(store: RunStore, run_id: str, epochs: int) -> None:
    """Every epoch's scalars and arrays once, every logged step once, as the config asks."""
    info = store.run(run_id)
    frame = store.metrics(run_id)
    epoch_rows = frame[frame.scope == "epoch"]
    assert not epoch_rows.duplicated(["epoch", "key"]).any()
    assert sorted(epoch_rows.epoch.unique()) == list(range(epochs))
    assert (epoch_rows.groupby("epoch").key.apply(frozenset).nunique()) == 1  # the same scalars every epoch
    log_every = store.config(run_id).probes.log_every
    steps = frame[(frame.scope == "step") & (frame.key == "train.loss")].step
    assert steps.tolist() == list(range(log_every, epochs * info["steps_per_epoch"] + 1, log_every))
    assert len(frame[frame.scope == "step"]) == 2 * len(steps)  # train.loss and lr
    assert store.per_sample_epochs(run_id) == list(range(epochs))


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_from_its_checkpoint_with_nothing_missing_or_doubled(kdlib_home):
    # epochs of a few tenths of a second, with a logged step every few hundredths of one
    config = tiny_config(
        method={"name": "ce"},
        epochs=3,
        data={"name": "toy2d", "n_samples": 16000},
        student={"name": "mlp", "hidden": [64, 64]},
        probes={"log_every": 5, "probs_every": 2},
    )
    store = RunStore(kdlib_home)
    handle = kdlib.launch(config)
    straight = kdlib.launch(config)  # the same run, never interrupted, alongside
    run_id = handle.run_id

    checkpoint = store.run_dir(run_id) / "checkpoint.pt"

    def in_epoch_after_a_checkpoint() -> bool:
        if not checkpoint.exists():
            return False
        done = load_checkpoint(checkpoint)["epoch"]
        steps = store.metrics(run_id, scope="step")
        return bool((steps.epoch == done + 1).any()) and done + 1 not in store.epoch_metrics(run_id).index

    _wait_for(in_epoch_after_a_checkpoint, what="a step logged after the first checkpoint")
    os.kill(handle.info["pid"], signal.SIGKILL)
    assert handle.wait(timeout=30) == "failed"
    assert "worker.log" in handle.info["error"] and "resume" in handle.info["error"]
    killed_in = load_checkpoint(checkpoint)["epoch"] + 1
    assert (store.metrics(run_id, scope="step").epoch == killed_in).any()  # part of an epoch written, then killed

    handle.resume()
    assert handle.wait(timeout=90) == "done", handle.info["error"]
    _assert_complete(store, run_id, 3)
    assert store.per_sample_epochs(run_id, split="test", key="probs") == [1, 2]

    # the same numbers as the run that was never interrupted
    assert straight.wait(timeout=90) == "done"
    resumed, expected = store.epoch_metrics(run_id), store.epoch_metrics(straight.run_id)
    assert np.allclose(resumed["test.nll"], expected["test.nll"], atol=1e-6)
    assert np.allclose(resumed["train.loss"], expected["train.loss"], atol=1e-6)
    last = store.per_sample(run_id, 2)["p_true_student"], store.per_sample(straight.run_id, 2)["p_true_student"]
    assert np.array_equal(*last)
    steps = store.step_metrics(run_id)["train.loss"], store.step_metrics(straight.run_id)["train.loss"]
    assert np.allclose(*steps, atol=1e-6)


@pytest.mark.slow
def test_runs_writing_to_one_store_at_once_lose_nothing(kdlib_home):
    configs = [
        tiny_config(method={"name": "ce"}, epochs=6, seed=seed, probes={"log_every": 1}, batch_size=16)
        for seed in range(3)
    ]
    handles = [kdlib.launch(config) for config in configs]
    assert [h.wait(timeout=120) for h in handles] == ["done"] * 3
    store = RunStore(kdlib_home)
    for handle in handles:
        _assert_complete(store, handle.run_id, 6)


class SlowSink:
    """A sink that records in the background and takes its time: it has written an epoch only once flushed."""

    def __init__(self) -> None:
        self.received, self.written = set(), set()

    def emit(self, event) -> None:
        if isinstance(event, EpochEnded):
            self.received.add(event.epoch)
        if isinstance(event, CheckpointSaved):  # the checkpoint is on disk now
            assert event.epoch in self.written, "a checkpoint ran ahead of what the sink had written"

    def flush(self) -> None:
        time.sleep(0.05)
        self.written |= self.received

    def close(self) -> None:
        pass


def test_a_checkpoint_waits_until_the_sinks_have_written_its_epoch(tiny, tmp_path):
    sink = SlowSink()
    fit(tiny(method={"name": "ce"}), tmp_path, [sink])
    assert sink.written == {0, 1, 2}


def test_every_torch_load_is_weights_only():
    loads = []
    for path in [*ROOT.glob("kdlib/**/*.py"), *ROOT.glob("app/**/*.py"), *ROOT.glob("bench/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                weights_only = {k.arg: k.value for k in node.keywords}.get("weights_only")
                loads.append(
                    (f"{path.relative_to(ROOT)}:{node.lineno}", ast.unparse(weights_only or ast.Constant(None)))
                )
    assert loads, "no torch.load found: the test looks in the wrong place"
    assert [where for where, value in loads if value != "True"] == []
