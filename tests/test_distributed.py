"""Training on several processes (torchrun, gloo on this CPU) gives what one process gives.

Two processes share each global batch; the run is compared with one process on the same global
batch: epoch metrics and per-sample arrays agree within float rounding (the gradient sums are
added in another order; per-sample arrays are stored as float16).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kdlib.distributed import Processes
from kdlib.runner import execute
from kdlib.store import RunStore
from kdlib.trainer import fit
from tests.conftest import StopAfter

REPO = Path(__file__).resolve().parent.parent
METRICS = ["train.loss", "val.acc", "val.nll", "test.acc", "test.nll"]


def torchrun(home: Path, *args: str, processes: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "kdlib", *args, "--home", str(home)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def config_for(tiny, method: str):
    # 280 training samples in batches of 48: the last global batch (40) is split 20/20, and an odd
    # batch size would split unevenly; both are covered by weighting each process by its share
    return tiny(method={"name": method}, epochs=3, batch_size=47, data={"name": "toy2d", "n_samples": 400})


def assert_same_run(store: RunStore, one: str, two: str) -> None:
    a, b = store.epoch_metrics(one), store.epoch_metrics(two)
    assert list(a.index) == list(b.index) == [0, 1, 2]  # every epoch once
    np.testing.assert_allclose(a[METRICS].to_numpy(), b[METRICS].to_numpy(), rtol=1e-4, atol=1e-5)
    for epoch in (0, 2):
        x, y = store.per_sample(one, epoch), store.per_sample(two, epoch)
        assert set(x) == set(y)
        for key in x:
            np.testing.assert_allclose(x[key].astype(float), y[key].astype(float), rtol=2e-3, atol=2e-3, err_msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["kd", "pskd"])
def test_two_processes_train_what_one_process_trains(tiny, kdlib_home, tmp_path, method):
    store = RunStore()
    config = config_for(tiny, method)
    single = store.create_run(config)
    assert execute(single, store) == "done", store.run(single)["error"]  # also trains the shared teacher
    path = tmp_path / "run.yaml"
    path.write_text(config.to_yaml())
    output = torchrun(kdlib_home, "run", str(path)).stdout
    double = store.runs("student").id.iloc[0]
    assert double != single and "on 2 processes" in output
    assert store.run(double)["status"] == "done"
    assert len(store.runs("teacher")) <= 1  # the teacher was found, not trained again
    assert_same_run(store, single, double)


@pytest.mark.slow
def test_a_run_stopped_in_one_process_resumes_on_two(tiny, kdlib_home):
    store = RunStore()
    config = config_for(tiny, "kd")
    whole = store.create_run(config)
    assert execute(whole, store) == "done"
    stopped = store.create_run(config)
    assert execute(stopped, store, extra_sinks=[StopAfter(store, stopped, epoch=0)]) == "stopped"
    torchrun(kdlib_home, "resume", stopped)
    assert store.run(stopped)["status"] == "done"
    assert_same_run(store, whole, stopped)


def test_a_method_with_steps_of_its_own_refuses_several_processes(tiny, tmp_path):
    config = tiny(method={"name": "prokt"})
    with pytest.raises(ValueError, match=r"method.name: 'prokt' .* without torchrun"):
        fit(config, tmp_path, [], processes=Processes(rank=0, world=2))


@pytest.mark.parametrize("batch_size", [4, 3])
def test_each_process_loads_only_its_rows_of_each_batch(batch_size):
    """Parts of a DataLoader split's batches, put together, are the batches one process draws; a
    process left with no rows of a short last batch gets an empty batch, so all step together."""
    import torch
    from torch.utils.data import TensorDataset

    from kdlib.data.base import LoaderSplit, TensorSplit

    x, y = torch.arange(10.0)[:, None], torch.arange(10) % 3  # the last batch is short
    for split in (LoaderSplit(TensorDataset(x, y), y, num_workers=0, pin_memory=False), TensorSplit(x, y)):
        def drawn(part, split=split):
            return [b.index.tolist() for b in split.batches(batch_size, True, torch.Generator().manual_seed(1), part=part)]

        whole, first, second, third = drawn((0, 1)), drawn((0, 3)), drawn((1, 3)), drawn((2, 3))
        assert len(whole) == len(first) == len(second) == len(third)
        for rows, *parts in zip(whole, first, second, third, strict=True):
            assert sorted(rows) == sorted(sum(parts, [])) and rows[0::3] == parts[0]
        assert third[-1] == []
        assert next(b for i, b in enumerate(split.batches(batch_size, part=(2, 3))) if i == len(third) - 1).x.shape == (0, 1)
