"""The command line, as a user types it."""

from __future__ import annotations

import json
import subprocess
import sys

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
