"""Runs in their own processes, followed from other processes through the store."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

import kdlib
from kdlib.store import RunStore
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow

READER = textwrap.dedent("""
    import json, sys, time
    from kdlib.store import RunStore
    store, run_id = RunStore(sys.argv[1]), sys.argv[2]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run = store.run(run_id)
        epochs = store.epoch_metrics(run_id)
        if run["status"] == "running" and len(epochs) >= 2:
            print(json.dumps({"status": run["status"], "epochs": len(epochs), "total": run["total_epochs"]}))
            break
        time.sleep(0.05)
""")


def slow_config(epochs: int = 60) -> dict:
    return tiny_config(
        method={"name": "ce"},
        epochs=epochs,
        data={"name": "toy2d", "n_samples": 4000},
        student={"name": "mlp", "hidden": [64, 64]},
    )


def test_a_background_run_is_read_live_from_another_process(kdlib_home):
    handle = kdlib.launch(slow_config())
    try:
        seen = subprocess.run(
            [sys.executable, "-c", READER, str(kdlib_home), handle.run_id], capture_output=True, text=True, timeout=90
        )
        live = json.loads(seen.stdout)
        assert live["status"] == "running" and 2 <= live["epochs"] < live["total"]
    finally:
        handle.stop()
    assert handle.wait(timeout=60) == "stopped"


def test_pause_resume_and_stop_a_background_run(kdlib_home):
    handle = kdlib.launch(slow_config(epochs=200))
    store = RunStore(kdlib_home)
    _wait_for(lambda: len(store.epoch_metrics(handle.run_id)) >= 1)
    handle.pause()
    _wait_for(lambda: handle.status == "paused")
    frozen = len(store.metrics(handle.run_id))
    import time

    time.sleep(0.6)
    assert len(store.metrics(handle.run_id)) == frozen  # a paused run writes nothing
    handle.resume()
    _wait_for(lambda: handle.status == "running" and len(store.metrics(handle.run_id)) > frozen)
    handle.stop()
    assert handle.wait(timeout=60) == "stopped"
    stopped_at = store.run(handle.run_id)["epoch"]

    # a stopped run is resumed in a new process from its last checkpoint
    handle.resume()
    _wait_for(lambda: handle.status == "running" and store.run(handle.run_id)["epoch"] > stopped_at)
    handle.stop()
    assert handle.wait(timeout=60) == "stopped"
    epochs = store.epoch_metrics(handle.run_id).index
    assert list(epochs) == list(range(len(epochs)))


def test_a_killed_worker_is_reported_failed_with_its_log(kdlib_home):
    import os
    import signal

    handle = kdlib.launch(slow_config(epochs=200))
    _wait_for(lambda: handle.status == "running")
    os.kill(handle.info["pid"], signal.SIGKILL)
    assert handle.wait(timeout=30) == "failed"
    assert "worker.log" in handle.info["error"] and "resume" in handle.info["error"]


def test_launch_refuses_a_bad_config_before_starting_anything(kdlib_home):
    with pytest.raises(kdlib.ConfigError, match="method.name"):
        kdlib.launch(tiny_config(method={"name": "nope"}))
    assert RunStore(kdlib_home).runs().empty


def _wait_for(condition, timeout: float = 60) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
