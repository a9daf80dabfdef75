"""Analyses over stored runs: the route map."""

from __future__ import annotations

import numpy as np
import pytest

from kdlib.analysis import hellinger_pca, route_layout
from kdlib.runner import execute
from kdlib.store import RunStore


def test_hellinger_pca_keeps_identical_models_together():
    rng = np.random.default_rng(0)
    a, b = rng.dirichlet(np.ones(3), size=20), rng.dirichlet(np.ones(3), size=20)
    xy = hellinger_pca(np.stack([a, a, b]))
    assert np.allclose(xy[0], xy[1]) and not np.allclose(xy[0], xy[2])


def test_route_layout_places_checkpoints_student_epochs_and_anchors(tiny):
    store = RunStore()
    config = tiny(method={"name": "rco", "anchors": {"kind": "equal_interval", "num_anchors": 2}}, epochs=4,
                  teacher__epochs=4)
    run_id = store.create_run(config)
    assert execute(run_id, store) == "done"
    layout = route_layout(store, run_id)
    assert layout[layout.who == "teacher"].epoch.tolist() == [1, 2, 3, 4]
    assert layout[layout.who == "student"].epoch.tolist() == [1, 2, 3, 4]
    assert layout[layout.anchor].epoch.tolist() == [2, 4]
    assert layout[layout.current].epoch.tolist() == [4]
    early = route_layout(store, run_id, up_to_epoch=0)
    assert early[early.current].epoch.tolist() == [2]  # in the first epoch the student followed epoch 2
    assert np.isfinite(layout[["x", "y"]].to_numpy()).all()


def test_route_layout_without_a_route_says_why(tiny):
    store = RunStore()
    run_id = store.create_run(tiny(method={"name": "ce"}))
    execute(run_id, store)
    with pytest.raises(ValueError, match="teacher.route"):
        route_layout(store, run_id)
