"""Faults injected on purpose: SIGKILL at random points and in the middle of writing an epoch file or a
checkpoint (then resume equals the run never interrupted), a full disk (a small tmpfs when this process
may mount one, and a failing write injected), a damaged store file, a read-only home, a truncated epoch
file, a deleted checkpoint."""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import kdlib
import kdlib.checkpoints
import kdlib.runner
import kdlib.store.samples
from kdlib.runner import RunHandle, execute
from kdlib.store import RunStore, StoreError
from tests.conftest import StopAfter, tiny_config
from tests.test_reliability import _assert_complete
from tests.test_store import write_run


def resumable_config() -> dict:
    """Epochs of a few tenths of a second (175 steps) with a logged step every few hundredths."""
    return tiny_config(
        method={"name": "ce"},
        epochs=3,
        data={"name": "toy2d", "n_samples": 8000},
        student={"name": "mlp", "hidden": [64, 64]},
        probes={"log_every": 5, "probs_every": 2},
    )


def wait_for(condition, timeout: float = 60, what: str = "a condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def assert_same_run(store: RunStore, run_id: str, straight: str, epochs: int = 3) -> None:
    """Everything recorded once, and the same numbers as the run that was never interrupted."""
    _assert_complete(store, run_id, epochs)
    resumed, expected = store.epoch_metrics(run_id), store.epoch_metrics(straight)
    assert np.allclose(resumed["test.nll"], expected["test.nll"], atol=1e-6)
    assert np.allclose(resumed["train.loss"], expected["train.loss"], atol=1e-6)
    for epoch in range(epochs):
        assert np.array_equal(
            store.per_sample(run_id, epoch)["p_true_student"], store.per_sample(straight, epoch)["p_true_student"]
        )
    assert np.allclose(store.step_metrics(run_id)["train.loss"], store.step_metrics(straight)["train.loss"], atol=1e-6)
    assert not list(store.run_dir(run_id).rglob("*.tmp"))


# --- SIGKILL --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_runs_killed_at_random_steps_resume_to_the_run_never_interrupted(kdlib_home):
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    store = RunStore(kdlib_home)
    straight = kdlib.launch(resumable_config())
    handle = kdlib.launch(resumable_config())
    kills = 0
    for _ in range(2):

        def logged() -> int:
            steps = store.metrics(handle.run_id, scope="step").step
            return int(steps.max()) if len(steps) else 0

        wait_for(lambda: logged() > 0 or handle.status != "running", what="the run to log a step")
        target = logged() + rng.randrange(1, 150)  # 525 steps in all
        wait_for(lambda t=target: logged() >= t or handle.status not in ("queued", "running"), what=f"step {target}")
        if handle.status != "running":
            break
        os.kill(handle.info["pid"], signal.SIGKILL)
        kills += 1
        assert handle.wait(timeout=10) == "failed", f"seed {seed}"
        handle.resume()
    assert kills, f"seed {seed}: the run ended before it could be killed"
    assert handle.wait(timeout=60) == "done", f"seed {seed}: {handle.info['error']}"
    assert straight.wait(timeout=60) == "done"
    assert_same_run(store, handle.run_id, straight.run_id)


HOLD = textwrap.dedent("""
    # Runs a run as a worker would, but stops in the middle of writing the epoch file or the checkpoint
    # of one epoch: half the file is on disk when the test's SIGKILL comes.
    import sys, time
    from pathlib import Path

    import torch

    import kdlib.store.samples as samples
    from kdlib.runner import execute
    from kdlib.store import RunStore

    home, run_id, where, epoch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

    def hold(path):
        path = Path(path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        (Path(home) / "holding").write_text(str(path))
        time.sleep(600)

    if where == "checkpoint":
        save = torch.save

        def held_save(obj, path, *args, **kwargs):
            save(obj, path, *args, **kwargs)
            if str(path).endswith("checkpoint.pt.tmp") and obj["epoch"] == epoch:
                hold(path)

        torch.save = held_save
    else:
        write = samples.write_epoch_file

        def held_write(path, arrays):
            layout = write(path, arrays)
            if Path(path).name.startswith(f".epoch_{epoch:04d}."):
                hold(path)
            return layout

        samples.write_epoch_file = held_write
    execute(run_id, RunStore(home))
""")


@pytest.mark.slow
@pytest.mark.parametrize("where", ["epoch_file", "checkpoint"])
def test_a_run_killed_while_writing_resumes_to_the_run_never_interrupted(kdlib_home, where):
    store = RunStore(kdlib_home)
    straight = kdlib.launch(resumable_config())
    run_id = store.create_run(kdlib.validate_config(resumable_config()))
    holding = kdlib_home / "holding"
    with open(store.run_dir(run_id) / "worker.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(kdlib_home), run_id, where, "1"], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for(lambda: holding.exists() or process.poll() is not None, what=f"the {where} of epoch 1 to be written")
        assert holding.exists(), (store.run_dir(run_id) / "worker.log").read_text()
        half_written = Path(holding.read_text())
        assert half_written.exists() and half_written.suffix == ".tmp"
    finally:
        process.kill()
        process.wait()
    handle = RunHandle(run_id, store)
    assert handle.wait(timeout=5) == "failed"
    handle.resume()
    assert handle.wait(timeout=60) == "done", handle.info["error"]
    assert straight.wait(timeout=60) == "done"
    assert_same_run(store, run_id, straight.run_id)


# --- a full disk ------------------------------------------------------------------------------------


def fills_the_disk(monkeypatch, module, name: str, when) -> None:
    """Make `module.name` (a writer) write half its file and then fail as on a full disk, when `when(args)`."""
    original = getattr(module, name)

    def failing(*args, **kwargs):
        if not when(args):
            return original(*args, **kwargs)
        path = Path(args[1] if name == "save" else args[0])
        path.write_bytes(b"\0" * 1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(module, name, failing)


def assert_failed_for_a_full_disk(store: RunStore, run_id: str) -> None:
    run = store.run(run_id)
    assert run["status"] == "failed"
    assert "is full" in run["error"] and f"resume {run_id}" in run["error"]
    assert not list(store.home.rglob("*.tmp")), "a temporary file was left behind"


@pytest.mark.parametrize("writer", ["checkpoint", "epoch_file"])
def test_a_write_that_meets_a_full_disk_fails_the_run_cleanly_and_it_resumes_once_there_is_room(
    kdlib_home, tiny, monkeypatch, writer
):
    store = RunStore(kdlib_home)
    run_id = store.create_run(tiny(method={"name": "ce"}))
    if writer == "checkpoint":
        fills_the_disk(monkeypatch, kdlib.checkpoints.torch, "save", lambda args: args[0].get("epoch") == 1)
    else:
        fills_the_disk(
            monkeypatch, kdlib.store.samples, "write_epoch_file", lambda args: ".epoch_0001." in str(args[0])
        )
    assert execute(run_id, store) == "failed"
    assert_failed_for_a_full_disk(store, run_id)
    monkeypatch.undo()  # room again
    assert execute(run_id, store) == "done"
    assert store.epoch_metrics(run_id).index.tolist() == [0, 1, 2]


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a small tmpfs (needs root); yields its folder."""
    folder = tmp_path / "tmpfs"
    folder.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)], capture_output=True
        ).returncode
    ):
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.mark.slow
@pytest.mark.parametrize("free_kib", [150, 400, 700])
def test_a_run_on_a_disk_that_fills_up_fails_cleanly_and_resumes_once_there_is_room(tmpfs, free_kib):
    store = RunStore(tmpfs / "home")
    config = resumable_config() | {"epochs": 4, "probes": {"log_every": 2, "probs_every": 1}}
    config["data"]["n_samples"] = 4000
    run_id = store.create_run(kdlib.validate_config(config))
    filler = tmpfs / "filler"
    filler.write_bytes(b"\0" * (shutil.disk_usage(tmpfs).free - free_kib * 1024))
    assert execute(run_id, store) == "failed"  # the store's log, an epoch file or a checkpoint met the full disk
    assert_failed_for_a_full_disk(store, run_id)
    assert store.runs().status.tolist() == ["failed"]  # still read
    filler.unlink()
    assert execute(run_id, store) == "done"
    _assert_complete(store, run_id, 4)


# --- a damaged store, a read-only home ----------------------------------------------------------------


def test_a_damaged_store_file_is_named_with_what_to_do(kdlib_home, tiny):
    store = RunStore(kdlib_home)
    write_run(store, tiny)
    damaged = bytearray(store.path.read_bytes())
    damaged[:16] = b"garbage garbage!"  # the SQLite header
    store.path.write_bytes(bytes(damaged))
    with pytest.raises(StoreError, match="damaged") as raised:
        RunStore(kdlib_home).runs()
    assert str(store.path) in str(raised.value) and f"mv {store.path} {store.path}.damaged" in str(raised.value)
    assert raised.value.kind == "damaged"


@pytest.fixture
def read_only_home(tmp_path):
    """A home with a store in it, then made read-only: a read-only tmpfs under root (who may write in any
    folder), else a folder without write permission."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)]).returncode:
            pytest.skip("a read-only home needs a mount for root")
        RunStore(folder / "home")
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        yield folder
        subprocess.run(["umount", "-l", str(folder)], check=True)
    else:
        RunStore(folder / "home")
        folder.chmod(0o555)
        (folder / "home").chmod(0o555)
        yield folder
        folder.chmod(0o755)
        (folder / "home").chmod(0o755)


def test_a_read_only_home_is_named_with_what_to_do(read_only_home):
    for home in (read_only_home / "home", read_only_home / "new"):
        with pytest.raises(StoreError, match="read-only") as raised:
            RunStore(home).runs()
        assert str(home / "store.sqlite") in str(raised.value) and "KDLIB_HOME" in str(raised.value)


# --- a truncated epoch file, a deleted checkpoint --------------------------------------------------------


def test_a_truncated_epoch_file_is_skipped_with_a_warning_and_the_other_epochs_read(tiny):
    store = RunStore()
    run_id = write_run(store, tiny)
    cut = store.samples_dir(run_id) / "epoch_0002.safetensors"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    with pytest.warns(UserWarning, match="epoch_0002"):
        trajectory = RunStore(store.home).trajectory(run_id, "p_true_student", 40)
    assert trajectory.index.tolist() == [0, 1, 3]


def stopped_run(store: RunStore, tiny, after_epoch: int | None) -> str:
    run_id = store.create_run(tiny(method={"name": "ce"}, epochs=3))
    execute(run_id, store, extra_sinks=[StopAfter(store, run_id, after_epoch if after_epoch is not None else -1)])
    if after_epoch is None:  # stopped before its first checkpoint
        store.update_run(run_id, status="stopped", epoch=None)
    return run_id


def test_resume_without_its_checkpoint_says_so_and_asks_for_from_scratch(tiny, monkeypatch):
    store = RunStore()
    started = []
    monkeypatch.setattr(kdlib.runner, "_start_worker", lambda run_id, store: started.append(run_id))
    run_id = stopped_run(store, tiny, after_epoch=0)
    checkpoint = store.run_dir(run_id) / "checkpoint.pt"
    checkpoint.unlink()
    with pytest.raises(StoreError, match="--from-scratch") as raised:
        kdlib.runner.resume(run_id)
    assert str(checkpoint) in str(raised.value) and started == []
    kdlib.runner.resume(run_id, from_scratch=True)
    assert started == [run_id] and store.run(run_id)["checkpoint_epoch"] is None

    never_saved = stopped_run(store, tiny, after_epoch=None)
    kdlib.runner.resume(never_saved)  # nothing was lost: it starts from epoch 0 as it would have
    assert started == [run_id, never_saved]


@pytest.mark.slow
def test_resume_from_scratch_trains_the_run_again_from_epoch_0(tiny):
    store = RunStore()
    run_id = stopped_run(store, tiny, after_epoch=1)
    (store.run_dir(run_id) / "checkpoint.pt").unlink()
    handle = kdlib.runner.resume(run_id, from_scratch=True)
    assert handle.wait(timeout=60) == "done"
    events = store.events(run_id)
    assert events[events.kind == "started"].message.iloc[-1].startswith("epoch 0")
    _assert_complete(store, run_id, 3)
