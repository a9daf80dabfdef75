"""The training step makes no host sync: what syncs per epoch must not grow with the steps per epoch.

Every call that makes the host wait for the device (`.item()`, `.tolist()`, `.cpu()`, `.numpy()`,
`bool(t)`, `float(t)`, ...) is counted from the end of epoch 0 on, for one run with 4x more steps
per epoch than another. On a GPU each of these would stall the queue; a per-step one would show
here as a count that grows with the steps. SGD is used because torch's Adam reads its step count
with `.item()` from a host tensor, which never waits for a GPU.
"""

from __future__ import annotations

import pytest
import torch

from kdlib.events import EpochEnded
from kdlib.methods import METHODS
from kdlib.runner import execute
from kdlib.store import RunStore

# ProKT updates its teacher with its own optimizer: SGD too, for the reason above.
HOST_OPTIMIZERS = {"prokt": {"teacher_optimizer": "sgd"}}
SYNCING = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__", "__array__")


class SyncCounter:
    """Counts host syncs once the run's first epoch has ended (a sink, and a patch of torch.Tensor)."""

    def __init__(self, monkeypatch) -> None:
        self.counting, self.calls = False, {}
        for name in SYNCING:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counted(name, original))

    def _counted(self, name, original):
        def call(tensor, *args, **kwargs):
            if self.counting:
                self.calls[name] = self.calls.get(name, 0) + 1
            return original(tensor, *args, **kwargs)

        return call

    def emit(self, event) -> None:
        if isinstance(event, EpochEnded):
            self.counting = True

    def close(self) -> None:
        self.counting = False


def data_for(method: str, points: dict) -> dict:
    """The points; for a method that adapts to a target domain (uda_pkd), a pair of them as source and target."""
    if getattr(METHODS.get(method).Params, "needs_target_domain", False):
        return {"name": "domain_pair", "source": points, "target": points}
    return points


def syncs_in_later_epochs(tiny, monkeypatch, method: str, batch_size: int) -> dict[str, int]:
    store = RunStore()
    config = tiny(
        method={"name": method, **HOST_OPTIMIZERS.get(method, {})},
        epochs=3,
        batch_size=batch_size,
        optimizer={"name": "sgd", "lr": 0.05},
        probes={"log_every": 10_000},
        data=data_for(method, {"name": "toy2d", "n_samples": 400}),
    )
    # uncounted first: the teacher's training, and the teacher-output caches a run computes once
    execute(store.create_run(config), store)
    counter = SyncCounter(monkeypatch)
    run_id = store.create_run(config)
    assert execute(run_id, store, extra_sinks=[counter]) == "done", store.run(run_id)["error"]
    return counter.calls


@pytest.mark.parametrize("method", METHODS.names())
def test_no_host_sync_grows_with_the_steps_of_an_epoch(tiny, monkeypatch, method):
    few = syncs_in_later_epochs(tiny, monkeypatch, method, batch_size=40)  # 7 steps per epoch
    many = syncs_in_later_epochs(tiny, monkeypatch, method, batch_size=10)  # 28 steps per epoch
    assert many == few, f"{method}: host syncs per run {few} with 7 steps per epoch, {many} with 28"


def test_the_counter_sees_a_sync_in_the_step(tiny, monkeypatch):
    """The check itself: a method that reads its loss with .item() every step is caught."""
    kd = METHODS.get("kd")
    original = kd.loss

    def loss_with_item(self, batch, student_out, teacher_out):
        out = original(self, batch, student_out, teacher_out)
        out.loss.item()
        return out

    monkeypatch.setattr(kd, "loss", loss_with_item)
    few = syncs_in_later_epochs(tiny, monkeypatch, "kd", batch_size=40)
    many = syncs_in_later_epochs(tiny, monkeypatch, "kd", batch_size=10)
    assert many["item"] - few["item"] == 2 * (28 - 7)
