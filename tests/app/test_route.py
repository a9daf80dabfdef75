"""Teacher route: checkpoints and student epochs in one map, distances to the route, RCO's anchors."""

from __future__ import annotations

import numpy as np

from kdlib.events import EpochEnded, RunEnded
from kdlib.store import RunStore, StoreSink
from tests.app.conftest import figures, open_page, shown


def test_an_empty_store_points_to_train():
    app = open_page("route")
    assert "No student runs" in app.info[0].value


def test_an_rco_run_on_its_route_with_the_anchor_schedule(methods):
    store, runs = methods
    app = open_page("route", run=runs["rco"])
    assert app.select_slider[0].options == ["0", "1", "2"] and app.select_slider[0].value == 2
    route, distance, anchors = figures(app)
    assert {t["name"] for t in route["data"]} == {"teacher", "student", "anchors", "current anchor"}
    assert len(distance["data"]) == 4  # 3 checkpoints and the current anchor
    assert anchors["data"][0]["y"] == store.epoch_metrics(runs["rco"]).anchor_epoch.tolist()
    assert app.metric[2].value == f"epoch {int(store.epoch_metrics(runs['rco']).anchor_epoch.iloc[-1])}"


def test_the_epoch_from_the_link_limits_the_students_path(methods):
    store, runs = methods
    app = open_page("route", run=runs["wsl"], epoch="0")
    route = figures(app)[0]
    student = next(t for t in route["data"] if t["name"] == "student")
    assert len(student["x"]) == 1 and len(figures(app)) == 2  # no anchors: no schedule


def test_a_run_without_a_route_says_how_to_get_one(methods):
    store, runs = methods
    app = open_page("route", run=runs["pskd"])
    assert "teacher.route" in app.info[0].value and not figures(app)


def test_a_run_that_does_not_exist_shows_a_run_with_a_route(methods):
    app = open_page("route", run="nope")
    assert "run = nope, which this page cannot use" in shown(app.warning[0].value) and len(figures(app)) >= 2


def test_a_moving_teacher_draws_its_own_path(tiny):
    """ProKT records its teacher's predictions on the probe (`probe.teacher_probs`): a path of its own."""
    store = RunStore()
    run_id = store.create_run(tiny())
    rng = np.random.default_rng(0)
    np.savez(store.run_dir(run_id) / "route_probe.npz", epochs=np.array([1, 2]), probs=rng.dirichlet([1, 1], (2, 50)))
    sink = StoreSink(store, run_id)
    for epoch in range(2):
        probe = {"probe.probs": rng.dirichlet([1, 1], 50), "probe.teacher_probs": rng.dirichlet([1, 1], 50)}
        sink.emit(EpochEnded(epoch, 10 * (epoch + 1), {"route_kl.0001": 0.3, "route_kl.0002": 0.5}, probe))
    sink.emit(RunEnded("done"))
    sink.close()
    route = figures(open_page("route", run=run_id))[0]
    moving = next(t for t in route["data"] if t["name"] == "moving teacher")
    assert len(moving["x"]) == 2
