"""RCO against METHODS.md section 6, and through the trainer with a real teacher route."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdlib.config import ConfigError
from kdlib.methods.kd import kd_step
from kdlib.methods.rco import (
    AnchorList,
    EqualInterval,
    equal_interval_anchors,
    equal_split,
    greedy_next_anchor,
    plan_anchors,
    snap_to_route,
)
from kdlib.runner import execute
from kdlib.store import RunStore


@pytest.mark.parametrize(
    ("route", "anchors", "expected"),
    [
        (240, 4, [60, 120, 180, 240]),
        (200, 3, [67, 134, 200]),
        (10, 3, [4, 7, 10]),
        (40, 1, [40]),
        (7, 7, list(range(1, 8))),
    ],
)
def test_equal_interval_anchors(route, anchors, expected):
    assert equal_interval_anchors(route, anchors) == expected


def test_student_switch_epochs_split_equally():
    assert equal_split(240, 4) == [0, 60, 120, 180]
    schedule = plan_anchors(EqualInterval(num_anchors=4), list(range(1, 241)), 240)
    assert [schedule.value_at(e) for e in (0, 59, 60, 179, 180, 239)] == [60, 60, 120, 180, 240, 240]


def test_a_sparse_route_snaps_anchors_to_saved_checkpoints():
    assert snap_to_route([4, 7, 10], [0, 5, 10]) == [5, 10]
    schedule = plan_anchors(EqualInterval(num_anchors=3), [5, 10], 10)
    assert schedule.teacher_epochs == [5, 10] and schedule.student_epochs == [0, 5]


def test_an_anchor_list_ends_on_the_converged_teacher():
    schedule = plan_anchors(AnchorList(teacher_epochs=[3, 9, 19], student_epochs=[0, 4, 8]), list(range(1, 41)), 12)
    assert schedule.teacher_epochs == [3, 9, 19, 40] and schedule.student_epochs == [0, 3, 6, 9]
    explicit = plan_anchors(AnchorList(teacher_epochs=[3, 40], student_epochs=[0, 4]), list(range(1, 41)), 12)
    assert explicit.curve(6) == [3, 3, 3, 3, 40, 40]
    with pytest.raises(ValueError, match="not on the teacher's route"):
        plan_anchors(AnchorList(teacher_epochs=[3, 41]), list(range(1, 41)), 12)


def test_greedy_picks_the_furthest_followable_checkpoint():
    distances = {1: 0.1, 2: 0.15, 3: 0.19, 4: 0.5, 5: 0.9}
    assert greedy_next_anchor(distances, None, reference=0.1, rho=2.0) == 3
    assert greedy_next_anchor(distances, 3, reference=0.1, rho=2.0) == 4  # none followable: the next one
    assert greedy_next_anchor(distances, 4, reference=0.5, rho=2.0) == 5


def test_identical_route_checkpoints_give_the_kd_loss():
    student, teacher = torch.randn(5, 3), torch.randn(5, 3)
    labels = torch.tensor([0, 1, 2, 0, 1])
    same = kd_step(student, teacher, labels, 4.0, 0.1, 0.9)
    assert same.loss.item() == pytest.approx(kd_step(student, teacher.clone(), labels, 4.0, 0.1, 0.9).loss.item())


@pytest.mark.parametrize(
    "anchors", [{"kind": "equal_interval", "num_anchors": 3}, {"kind": "greedy", "stage_epochs": 2, "probe_size": 50}]
)
def test_rco_follows_the_route_through_the_trainer(tiny, anchors):
    store = RunStore()
    config = tiny(method={"name": "rco", "temperature": 2.0, "anchors": anchors}, epochs=6, teacher__epochs=6)
    run_id = store.create_run(config)
    assert execute(run_id, store) == "done", store.run(run_id)["error"]
    anchor_epochs = store.epoch_metrics(run_id)["anchor_epoch"].tolist()
    assert anchor_epochs == sorted(anchor_epochs) and anchor_epochs[-1] == 6
    if anchors["kind"] == "equal_interval":
        assert anchor_epochs == [2, 2, 4, 4, 6, 6]
    arrays = store.per_sample(run_id, 5)
    for key in ("kl_anchor", "kl_final", "p_true_anchor", "p_true_teacher", "p_true_student"):
        assert np.isfinite(arrays[key]).all(), key
    assert np.allclose(arrays["kl_anchor"], arrays["kl_final"], atol=1e-3)  # the last anchor is the teacher


def test_rco_without_a_route_says_how_to_get_one(tiny):
    store = RunStore()
    plain = store.create_run(tiny(method={"name": "ce"}, student={"name": "mlp", "hidden": [32, 32]}))
    execute(plain, store)  # a finished run that saved no route, used as the teacher
    with pytest.raises(ConfigError, match="method.anchors: RCO follows the teacher's route, but teacher.checkpoint "
                       ".* has no route/epoch_XXXX.pt files; save epochs with teacher.route"):
        tiny(method={"name": "rco"}, teacher__checkpoint=plain)
