"""Decision boundaries: student and teacher regions of a toy2d run, epoch by epoch."""

from __future__ import annotations

import numpy as np

from kdlib.runner import execute
from kdlib.store import RunStore
from tests.app.conftest import figures, open_page


def test_without_2d_runs_the_page_points_to_train():
    app = open_page("boundaries")
    assert "No runs on 2-D data" in app.info[0].value
    link = app.get("page_link")[0].proto
    assert link.page == "train" and "data=toy2d" in link.query_string


def test_student_and_teacher_regions_with_points_coloured_by_soft_labels(trained):
    store, run_id = trained
    app = open_page("boundaries", run=run_id)
    assert app.select_slider[0].options == ["1", "2", "3"] and app.select_slider[0].value == 3
    student, teacher = figures(app)
    assert student["data"][0]["type"] == "heatmap" and teacher["data"][0]["type"] == "heatmap"
    grid = np.array(student["data"][0]["z"])
    assert grid.shape == (120, 120) and 0 <= grid.min() and grid.max() <= 1
    soft = np.array(student["data"][-1]["marker"]["color"])
    assert len(soft) == 280 and 0 < soft.min() and soft.max() < 1  # p(class 1) at T = 2 of 280 train points
    assert student["layout"]["title"]["text"].startswith("student (mlp) after 3 epochs")
    assert app.query_params["epoch"] in ("3", ["3"]) and app.query_params["color"] in ("soft", ["soft"])


def test_the_epoch_and_colouring_come_from_the_link(trained):
    store, run_id = trained
    app = open_page("boundaries", run=run_id, epoch="1", color="label")
    assert app.select_slider[0].value == 1
    student, teacher = figures(app)
    assert "after 1 epochs" in student["layout"]["title"]["text"]
    assert [t["name"] for t in student["data"][2:]] == ["label 0", "label 1"]
    later = open_page("boundaries", run=run_id, epoch="3", color="label")
    assert figures(later)[0]["data"][0]["z"] != student["data"][0]["z"]  # the student moved


def test_a_run_without_a_route_or_teacher_shows_its_final_regions(tiny):
    store = RunStore()
    run_id = store.create_run(tiny(method={"name": "ce"}, teacher=None))
    execute(run_id, store)
    app = open_page("boundaries", run=run_id)
    assert "kept no weights per epoch" in app.warning[0].value
    assert app.radio[0].options == ["the training label"] and len(figures(app)) == 1
