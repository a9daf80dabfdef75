"""The command line, as a user types it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_config


def kdlib_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "kdlib", *args], capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.mark.slow
def test_quickstart_trains_a_teacher_and_a_kd_student_and_show_prints_it():
    run = kdlib_cli("run", "configs/quickstart.yaml", "--set", "epochs=3", "--set", "teacher.epochs=3")
    assert "[done]" in run.stdout and "step" in run.stderr  # the progress bar writes to stderr
    shown = json.loads(kdlib_cli("show", "--json").stdout)
    assert shown["status"] == "done" and shown["epochs_done"] == 3 and shown["method"] == "kd"
    assert 0.2 < shown["final"]["test.acc"] <= 1.0
    listed = json.loads(kdlib_cli("ls", "--json", "--all").stdout)
    assert {r["kind"] for r in listed} == {"student", "teacher"}
    assert "kd mlp on mnist1d" in kdlib_cli("ls").stdout


def test_validate_prints_the_full_config_or_the_field_that_is_wrong(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tiny_config()))
    assert "temperature: 2.0" in kdlib_cli("validate", str(path)).stdout
    bad = kdlib_cli("validate", str(path), "--set", "method.name=pskd2", check=False)
    assert bad.returncode == 2 and "method.name: 'pskd2' is not a method" in bad.stderr


def test_show_without_runs_says_how_to_start_one():
    result = kdlib_cli("show", check=False)
    assert result.returncode == 2 and "python -m kdlib run" in result.stderr


# --- commands that read the store: no torch, runs by prefix, rm ---------------------------------


def stored_run(store, status: str = "done", test_acc: float = 0.87654321) -> str:
    """A run as training leaves it in the store, without training: its config, one epoch, its end."""
    from kdlib.events import EpochEnded, RunEnded, RunStarted
    from kdlib.store import StoreSink
    from kdlib.validation import validate_config

    run_id = store.create_run(validate_config(tiny_config()))
    sink = StoreSink(store, run_id)
    sink.emit(RunStarted(total_epochs=3, start_epoch=0, steps_per_epoch=4, device="cpu", train_size=400))
    sink.emit(EpochEnded(epoch=0, step=4, scalars={"train.loss": 0.5, "test.acc": test_acc}))
    if status != "running":  # a running run's pid is this test's: alive, so it stays running
        sink.emit(RunEnded(status))
    sink.close()
    return run_id


def imported_modules(stderr: str) -> set[str]:
    """The top-level packages a `python -X importtime` run imported."""
    return {
        line.rsplit("|", 1)[-1].strip().split(".")[0] for line in stderr.splitlines() if line.startswith("import time:")
    }


def test_commands_over_the_store_import_no_torch(kdlib_home):
    from kdlib.store import RunStore

    run_id = stored_run(RunStore(kdlib_home))
    for args in (
        ["--help"],
        ["--version"],
        ["ls"],
        ["ls", "--json"],
        ["show"],
        ["show", run_id[:-2], "--json"],
        ["study"],
        ["rm", run_id],
    ):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "kdlib", *args], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, (args, result.stderr[-2000:])
        modules = imported_modules(result.stderr)
        assert "kdlib" in modules and "torch" not in modules, args


def test_show_prints_the_stored_config_as_data_and_ls_rounds(kdlib_home):
    from kdlib.store import RunStore

    run_id = stored_run(RunStore(kdlib_home))
    shown = json.loads(kdlib_cli("show", "--json").stdout)
    assert shown["id"] == run_id and shown["config"]["method"]["temperature"] == 2.0
    assert "temperature: 2.0" in kdlib_cli("show", "--config").stdout
    listed = kdlib_cli("ls").stdout
    assert "0.877" in listed and "0.8765" not in listed
    assert json.loads(kdlib_cli("ls", "--json").stdout)[0]["test_acc"] == 0.87654321  # exact for scripts


def test_a_run_is_named_by_a_unique_prefix_and_an_ambiguous_one_lists_the_candidates(kdlib_home):
    from kdlib.store import RunStore

    first, second = stored_run(RunStore(kdlib_home)), stored_run(RunStore(kdlib_home))
    assert json.loads(kdlib_cli("show", first[:-1], "--json").stdout)["id"] == first
    common = os.path.commonprefix([first, second])
    ambiguous = kdlib_cli("show", common, check=False)
    assert ambiguous.returncode == 2 and first in ambiguous.stderr and second in ambiguous.stderr
    missing = kdlib_cli("stop", "nosuchrun", check=False)
    assert missing.returncode == 2 and "no run 'nosuchrun'" in missing.stderr
    refused = kdlib_cli("pause", second[:-1], check=False)  # found by its prefix; done, so it cannot pause
    assert refused.returncode == 2 and f"run {second} cannot pause: it has ended (done)" in refused.stderr


def test_rm_removes_a_run_and_refuses_an_active_one_without_force(kdlib_home):
    from kdlib.store import RunStore

    store = RunStore(kdlib_home)
    done, running = stored_run(store), stored_run(store, status="running")
    refused = kdlib_cli("rm", running[:-1], done, check=False)
    assert refused.returncode == 2 and f"{running} is running" in refused.stderr and "--force" in refused.stderr
    assert set(store.runs().id) == {done, running}  # nothing removed
    assert kdlib_cli("rm", done[:-1]).stdout.strip() == f"removed {done}"
    assert not store.run_dir(done).exists() and list(store.runs().id) == [running]
    assert store.metrics(done).empty
    kdlib_cli("rm", "--force", running)
    assert store.runs().empty and not store.run_dir(running).exists()


def test_version_and_help_list_the_user_commands_only():
    import kdlib

    assert kdlib_cli("--version").stdout.strip() == f"kdlib {kdlib.__version__}"
    usage = kdlib_cli("--help").stdout
    assert "rm" in usage and "worker" not in usage and "SUPPRESS" not in usage


def test_app_reads_the_home_it_is_given(tmp_path, monkeypatch):
    from kdlib import __main__ as cli

    called = {}
    monkeypatch.setattr(cli.subprocess, "call", lambda command, env: called.update(command=command, env=env) or 0)
    assert cli.main(["app", "--home", str(tmp_path / "elsewhere"), "--port", "8600"]) == 0
    assert called["env"]["KDLIB_HOME"] == str(tmp_path / "elsewhere")
    home = Path(called["command"][called["command"].index("run") + 1])
    assert home.name == "Home.py" and home.is_file()
    assert called["command"][called["command"].index("--server.port") + 1] == "8600"


# --- the CLI under faults: Ctrl-C, a finished run, a closed pipe, a damaged store -------------------


def test_resume_of_a_finished_run_and_a_damaged_store_are_one_line_each(kdlib_home):
    from kdlib.store import RunStore

    run_id = stored_run(RunStore())
    done = kdlib_cli("resume", run_id, check=False)
    assert done.returncode == 2 and f"run {run_id} cannot resume: it is done" in done.stderr
    assert "Traceback" not in done.stderr
    (kdlib_home / "store.sqlite").write_bytes(b"this is not a database" * 100)
    damaged = kdlib_cli("ls", check=False)
    assert damaged.returncode == 2 and "store.sqlite" in damaged.stderr and "Traceback" not in damaged.stderr


def test_show_into_a_closed_pipe_ends_quietly(kdlib_home):
    from kdlib.store import RunStore

    stored_run(RunStore())
    piped = subprocess.run(f"'{sys.executable}' -m kdlib show --config | head -c 1", shell=True, capture_output=True,
                           text=True, timeout=120)
    assert "BrokenPipeError" not in piped.stderr and "Traceback" not in piped.stderr


@pytest.mark.slow
def test_ctrl_c_stops_a_foreground_run_as_stopped_with_the_resume_hint(tmp_path, kdlib_home):
    import signal
    import time

    from kdlib.store import RunStore

    config = tmp_path / "long.yaml"
    config.write_text(yaml.safe_dump(tiny_config(epochs=100_000, method={"name": "ce"})))  # still going at Ctrl-C
    # SIGINT's default action, which a shell's background job (CI) would otherwise hand down as ignored
    process = subprocess.Popen([sys.executable, "-m", "kdlib", "run", str(config)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    store = RunStore()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(store.runs()["epoch"].fillna(-1) >= 1):
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    run = store.run(store.runs()["id"].iloc[0])
    assert run["status"] == "stopped" and "KeyboardInterrupt" not in (run["error"] or "")
    assert f"kdlib resume {run['id']}" in stderr
