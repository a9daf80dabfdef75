"""Every registered method trains for a few steps on toy2d: finite loss, one value per sample."""

from __future__ import annotations

import numpy as np
import pytest

from kdlib.methods import METHODS
from kdlib.runner import execute
from kdlib.store import RunStore


def tiny_data(method: str) -> dict:
    """200 toy2d points; for a method that adapts to a target domain, a pair whose two sides are those points."""
    points = {"name": "toy2d", "n_samples": 200}
    needs_target = getattr(METHODS.get(method).Params, "needs_target_domain", False)
    return {"name": "domain_pair", "source": points, "target": points} if needs_target else points


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_trains_and_records_one_value_per_sample(tiny, name):
    store = RunStore()
    run_id = store.create_run(tiny(method={"name": name}, epochs=2, data=tiny_data(name)))
    assert execute(run_id, store) == "done", store.run(run_id)["error"]
    epochs = store.epoch_metrics(run_id)
    assert np.isfinite(epochs["train.loss"]).all()
    arrays = store.per_sample(run_id, 1)
    n = len(arrays["label"])
    assert n == 140  # 200 samples less 10% validation and 20% test
    for key, values in arrays.items():
        assert values.shape[0] == n, key
        assert np.isfinite(values.astype(float)).all(), f"{name}: {key} has values missing"
