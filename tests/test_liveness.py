"""Liveness: a queued, running or paused run whose process has ended reads `failed` in every reader, with
its worker.log, and `wait()` returns; a reused pid is not taken for the run's process; `ls` and `show`
agree; a run's process sets its torch threads from the cores and the runs going at once."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import yaml

import kdlib
from kdlib.config import ConfigError
from kdlib.events import EpochEnded, RunStarted
from kdlib.runner import RunHandle, torch_threads
from kdlib.store import RunStore, StoreSink
from kdlib.store.runs import ENDED_WITHOUT_REPORTING, process_start
from tests.conftest import tiny_config


def ended_process() -> int:
    """The pid of a process that has ended (and been waited for)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def active_run(store: RunStore, tiny, status: str = "running", **process) -> str:
    run_id = store.create_run(tiny())
    store.update_run(run_id, status=status, **process)
    return run_id


def test_process_start_names_one_process():
    assert process_start(os.getpid()) == process_start(os.getpid()) is not None
    assert process_start(ended_process()) is None
    child = subprocess.Popen(["true"])
    time.sleep(0.3)  # ended, not waited for: a zombie has ended too
    assert process_start(child.pid) is None
    child.wait()


@pytest.mark.parametrize("status", ["queued", "running", "paused"])
def test_a_run_whose_process_ended_reads_failed_in_every_reader_with_its_log_and_one_event(tiny, status):
    store = RunStore()
    run_id = active_run(store, tiny, status, pid=ended_process(), pid_started=1.0)
    (store.run_dir(run_id) / "worker.log").write_text("loading the data\nTraceback ...\nMemoryError\n")

    listed = store.runs().set_index("id").loc[run_id]
    assert listed.status == "failed"
    assert ENDED_WITHOUT_REPORTING in listed.error and "worker.log" in listed.error
    assert listed.error.endswith("Traceback ...\nMemoryError") and f"resume {run_id}" in listed.error
    assert store.run(run_id)["status"] == "failed"  # recorded, not only shown
    assert RunHandle(run_id, store).wait(timeout=1) == "failed"
    assert store.events(run_id).kind.tolist() == ["failed"]  # once, however often it is read


def test_check_processes_records_the_ended_runs_for_readers_of_their_own(tiny):
    store = RunStore()
    dead = active_run(store, tiny, pid=ended_process(), pid_started=1.0)
    alive = active_run(store, tiny)
    store.check_processes()
    with sqlite3.connect(store.path) as db:
        statuses = dict(db.execute("SELECT id, status FROM runs").fetchall())
    assert (statuses[dead], statuses[alive]) == ("failed", "running")


def test_a_reused_pid_is_not_taken_for_the_run_s_process(tiny):
    store = RunStore()
    mine = process_start(os.getpid())
    reused = active_run(store, tiny, pid=os.getpid(), pid_started=mine - 1)  # another process had this pid before
    alive = active_run(store, tiny, pid=os.getpid(), pid_started=mine)
    elsewhere = active_run(store, tiny, pid=ended_process(), host="another-machine")  # cannot be checked from here
    statuses = store.runs().set_index("id").status
    assert (statuses[reused], statuses[alive], statuses[elsewhere]) == ("failed", "running", "running")


def test_the_process_that_registers_a_run_is_its_process_until_a_worker_records_itself(tiny):
    store = RunStore()
    run_id = store.create_run(tiny())
    run = store.run(run_id)
    assert (run["status"], run["pid"], run["pid_started"]) == ("queued", os.getpid(), process_start(os.getpid()))


def test_a_run_that_ended_meanwhile_keeps_its_own_end(tiny):
    store = RunStore()
    run_id = active_run(store, tiny, pid=ended_process(), pid_started=1.0)
    with sqlite3.connect(store.path) as db:  # read just before the run recorded its end (and its process ended)
        db.row_factory = sqlite3.Row
        seen = dict(db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone())
    store.end_run(run_id, "done")
    assert store._reconciled(seen)["status"] == "done"
    assert store.events(run_id).kind.tolist() == ["done"]


def test_ls_and_show_count_the_same_epochs_while_the_checkpoint_lags(tiny):
    store = RunStore()
    run_id = store.create_run(tiny(epochs=5))
    sink = StoreSink(store, run_id)
    sink.emit(RunStarted(5, 0, 2, "cpu", 50))
    for epoch in range(3):  # epoch 2 recorded, its checkpoint not yet written
        sink.emit(EpochEnded(epoch, 2 * epoch + 2, {"test.acc": 0.5}, {}))
    sink.close()
    store.update_run(run_id, epoch=1)  # the last checkpoint written
    run = store.run(run_id)
    assert (run["epoch"], run["checkpoint_epoch"]) == (2, 1)
    assert store.runs().set_index("id").epochs_done[run_id] == len(store.epoch_metrics(run_id)) == 3


def test_torch_threads_share_the_cores_among_the_runs_going_at_once(tiny, monkeypatch):
    for name in ("KDLIB_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    store, config = RunStore(), tiny()
    assert torch_threads(config, store)[0] == 8  # alone
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        active_run(store, tiny, pid=sleeper.pid, pid_started=process_start(sleeper.pid))
        active_run(store, tiny, "paused", pid=sleeper.pid)  # a paused run computes nothing
        active_run(store, tiny, pid=ended_process(), pid_started=1.0)  # dead: not going
        active_run(store, tiny, "queued")  # this process's, counted once
        assert torch_threads(config, store) == (4, "8 cores shared by 2 processes running runs")
    finally:
        sleeper.kill()
        sleeper.wait()
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert torch_threads(config, store) == (None, "OMP_NUM_THREADS")  # the user's own setting, left to torch
    monkeypatch.setenv("KDLIB_THREADS", "2")
    assert torch_threads(config, store) == (2, "KDLIB_THREADS")
    assert torch_threads(SimpleNamespace(threads=1), store) == (1, "the config's threads")
    monkeypatch.setenv("KDLIB_THREADS", "many")
    with pytest.raises(ConfigError, match="KDLIB_THREADS"):
        torch_threads(config, store)


# --- processes ----------------------------------------------------------------------------------


def slow_config(**changes) -> dict:
    config = tiny_config(
        method={"name": "ce"},
        epochs=200,
        data={"name": "toy2d", "n_samples": 4000},
        student={"name": "mlp", "hidden": [64]},
    )
    return config | changes


def wait_for(condition, timeout: float = 60, what: str = "a condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def cli(*args: str, home) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kdlib", *args, "--home", str(home)], capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
def test_a_sigkilled_run_is_not_shown_running_by_ls_within_2_s_and_ls_and_show_agree(kdlib_home):
    handle = kdlib.launch(slow_config())
    store = RunStore(kdlib_home)
    wait_for(lambda: len(store.epoch_metrics(handle.run_id)) >= 2, what="two epochs")
    os.kill(handle.info["pid"], signal.SIGKILL)
    killed = time.monotonic()
    listed = json.loads(cli("ls", "--json", home=kdlib_home).stdout)
    assert time.monotonic() - killed < 2, "ls took 2 s or more"
    assert listed[0]["status"] == "failed"
    assert handle.wait(timeout=5) == "failed"
    assert store.events(handle.run_id).kind.tolist()[-1] == "failed"
    shown = json.loads(cli("show", handle.run_id, "--json", home=kdlib_home).stdout)
    listed = json.loads(cli("ls", "--json", home=kdlib_home).stdout)[0]
    assert (shown["status"], shown["epochs_done"]) == (listed["status"], listed["epoch"] + 1)


@pytest.mark.slow
def test_a_worker_that_dies_before_training_does_not_leave_its_run_queued(kdlib_home, tmp_path):
    dies = tmp_path / "dies.py"  # kills the worker that imports it (the launcher imports it too, to validate)
    dies.write_text(
        "import os, signal, sys\n"
        "if 'worker' in sys.argv:\n"
        "    print('importing my models', flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    handle = kdlib.launch(tiny_config(imports=[str(dies)]))
    assert handle.wait(timeout=60) == "failed"
    assert "importing my models" in handle.info["error"]


@pytest.mark.slow
def test_a_killed_teacher_and_its_student_are_failed_not_running(kdlib_home):
    config = tiny_config(teacher={"model": {"name": "mlp", "hidden": [64]}, "epochs": 300}, epochs=2)
    config["data"] = {"name": "toy2d", "n_samples": 4000}
    handle = kdlib.launch(config)
    store = RunStore(kdlib_home)
    wait_for(lambda: (store.runs("teacher").status == "running").any(), what="the teacher to train")
    os.kill(handle.info["pid"], signal.SIGKILL)
    assert handle.wait(timeout=10) == "failed"
    assert store.runs().status.tolist() == ["failed", "failed"]


@pytest.mark.slow
def test_a_foreground_run_records_its_process_too(kdlib_home, tmp_path):
    path = tmp_path / "slow.yaml"
    path.write_text(yaml.safe_dump(slow_config()))
    env = {**os.environ, "KDLIB_HOME": str(kdlib_home)}
    process = subprocess.Popen(
        [sys.executable, "-m", "kdlib", "run", str(path)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    store = RunStore(kdlib_home)
    wait_for(lambda: not store.runs().empty and store.runs().status[0] == "running", what="the run to start")
    assert store.runs().pid[0] == process.pid
    process.kill()
    process.wait()
    assert store.runs().status[0] == "failed"
