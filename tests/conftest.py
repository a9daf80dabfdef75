"""Shared fixtures: every test writes into its own kdlib home."""

from __future__ import annotations

import os

# One torch thread: the tests train tiny models, for which a second thread only adds waiting (and on a
# shared 2-core machine makes them many times slower). Set before torch is imported; workers inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

from kdlib.validation import validate_config  # noqa: E402


@pytest.fixture(autouse=True)
def kdlib_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("KDLIB_HOME", str(home))
    return home


def tiny_config(**changes) -> dict:
    """A run that trains in about a second on toy2d: a tiny MLP student, a small MLP teacher."""
    config = {
        "data": {"name": "toy2d", "shape": "moons", "n_samples": 400, "noise": 0.2},
        "student": {"name": "mlp", "hidden": [8]},
        "teacher": {"model": {"name": "mlp", "hidden": [32, 32]}, "epochs": 3, "route": {"every": 1}},
        "method": {"name": "kd", "temperature": 2.0},
        "epochs": 3,
        "batch_size": 32,
        "optimizer": {"name": "adam", "lr": 0.01},
        "probes": {"log_every": 2},
        "device": "cpu",
    }
    for path, value in changes.items():
        node = config
        *parents, leaf = path.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return config


@pytest.fixture
def tiny():
    return lambda **changes: validate_config(tiny_config(**changes))


class StopAfter:
    """A sink that asks a run to stop once one of its epochs has ended (for resume tests).

    It hears the teacher's training too when the run trains its teacher: train the teacher first
    (a run of the same config) when the student itself must be stopped.
    """

    def __init__(self, store, run_id: str, epoch: int = 0) -> None:
        self.store, self.run_id, self.epoch = store, run_id, epoch

    def emit(self, event) -> None:
        from kdlib.events import EpochEnded

        if isinstance(event, EpochEnded) and event.epoch == self.epoch:
            self.store.request(self.run_id, "stop")

    def close(self) -> None:
        pass
