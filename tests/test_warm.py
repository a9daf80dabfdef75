"""The warm worker (kdlib.warm): runs forked from a server that has imported torch, each its own process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

import kdlib
from kdlib import warm
from kdlib.store import RunStore
from kdlib.store.runs import process_start
from tests.conftest import tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")]

SAYS = """\
import os, sys
if "worker" in sys.argv:  # the launcher imports it too, to validate
    print(f"worker {os.getpid()} cwd={os.getcwd()} mark={os.environ.get('WARM_TEST_MARK')}", flush=True)
"""


@pytest.fixture(scope="module")
def server():
    """The warm worker of the tests' environment (one per session: the kdlib home is not part of its key)."""
    warm.start_server()
    deadline = time.monotonic() + 120
    while (pid := warm.server_pid()) is None:
        assert time.monotonic() < deadline, "the warm worker did not start serving within 120 s"
        time.sleep(0.1)
    return pid


def assert_reaped(pid: int, timeout: float = 30) -> None:
    """The process is gone, not a zombie: its parent, the server, waited for it (after its exit, seconds)."""
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}"):
        assert time.monotonic() < deadline, f"process {pid} is still there (a zombie the server did not reap?)"
        time.sleep(0.1)


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as stat:
        return int(stat.read().rsplit(b")", 1)[1].split()[1])


def test_a_warm_run_is_its_own_process_with_the_caller_s_env_and_its_log(server, tmp_path, monkeypatch):
    says = tmp_path / "says.py"
    says.write_text(SAYS)
    monkeypatch.setenv("WARM_TEST_MARK", "from the caller")  # not read at import: the server's env lacks it
    handle = kdlib.launch(tiny_config(imports=[str(says)], threads=2))
    assert isinstance(handle.process, warm.WarmProcess)
    pid = handle.process.pid
    assert pid not in (server, os.getpid()) and handle.info["pid"] == pid
    if process_start(pid) is not None:  # still going: a session of its own, the server's child
        assert (os.getsid(pid), parent_of(pid)) == (pid, server)
    assert handle.wait(timeout=60) == "done"
    log = (handle.store.run_dir(handle.run_id) / "worker.log").read_text()
    assert f"worker {pid} cwd={os.getcwd()} mark=from the caller" in log
    events = handle.store.events(handle.run_id)
    assert "2 torch threads" in events[events.kind == "threads"].message.iloc[0]  # torch's pool starts in the child
    assert_reaped(pid)


def test_a_killed_warm_run_reads_failed_and_is_reaped(server, kdlib_home):
    config = tiny_config(method={"name": "ce"}, epochs=300, data={"name": "toy2d", "n_samples": 2000})
    handle = kdlib.launch(config)
    assert isinstance(handle.process, warm.WarmProcess)
    store = RunStore(kdlib_home)
    deadline = time.monotonic() + 60
    while store.epoch_metrics(handle.run_id).empty:
        assert time.monotonic() < deadline, "no epoch in 60 s"
        time.sleep(0.05)
    os.kill(handle.info["pid"], signal.SIGKILL)
    assert handle.wait(timeout=10) == "failed"
    assert "worker.log" in handle.info["error"]
    assert_reaped(handle.info["pid"])


def test_another_import_environment_falls_back_to_a_fresh_process(server, tmp_path, monkeypatch):
    monkeypatch.setattr(warm, "START_SERVER", False)  # no server for this environment, and none started
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    handle = kdlib.launch(tiny_config())
    assert isinstance(handle.process, subprocess.Popen)
    assert handle.wait(timeout=60) == "done"


def test_a_dead_server_s_socket_or_kdlib_warm_0_falls_back(tmp_path, monkeypatch):
    monkeypatch.setattr(warm, "START_SERVER", False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    stale = warm.socket_path(warm.worker_environment(), os.getcwd())
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:  # bound, never listening: as a killed server left it
        dead.bind(str(stale))
    try:
        assert not warm.ready()
        handle = kdlib.launch(tiny_config())
        assert isinstance(handle.process, subprocess.Popen) and handle.wait(timeout=60) == "done"
    finally:
        stale.unlink()
    monkeypatch.setenv("KDLIB_WARM", "0")
    assert not warm.available() and not warm.start_server()
    handle = kdlib.launch(tiny_config())
    assert isinstance(handle.process, subprocess.Popen) and handle.wait(timeout=60) == "done"


OWNER = """\
import sys, time
from kdlib import warm
warm.start_server()
while (pid := warm.server_pid()) is None:
    time.sleep(0.1)
print(pid, flush=True)
"""


def test_the_server_ends_with_the_process_that_started_it(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    owner = subprocess.run([sys.executable, "-c", OWNER], env=env, capture_output=True, text=True, timeout=180)
    pid = int(owner.stdout)
    deadline = time.monotonic() + 10
    while process_start(pid) is not None:
        assert time.monotonic() < deadline, "the warm worker outlived the process that started it"
        time.sleep(0.1)
