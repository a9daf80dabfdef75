"""Read-side helpers: run summaries, models read back from a run's folder, the numbers behind the views."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdlib.runner import execute
from kdlib.store import RunStore
from kdlib.validation import validate_config
from kdlib.views import (
    coefficient_at,
    describe_model,
    entropy_curve,
    grid_probabilities,
    load_student,
    load_teacher,
    plane_grid,
    predict_proba,
    route_epochs,
    run_logits,
    runs_summary,
    softmax_table,
    teacher_run_id,
    teacher_weights,
)
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny KD run on toy2d that kept its weights after every epoch, and its teacher."""
    store = RunStore(tmp_path_factory.mktemp("home"))
    run_id = store.create_run(validate_config(tiny_config(output={"route": {"every": 1}})))
    assert execute(run_id, store) == "done"
    return store, run_id


def test_describe_model_names_the_params_that_differ_from_defaults():
    config = validate_config(tiny_config())
    assert describe_model(config.student) == "mlp hidden=[8]"
    assert describe_model(validate_config(tiny_config(student={"name": "mlp"})).student) == "mlp"


def test_runs_summary_has_what_each_run_was_and_how_it_ended(trained):
    store, run_id = trained
    summary = runs_summary(store, [run_id, "no-such-run"])
    assert summary.id.tolist() == [run_id]
    row = summary.iloc[0]
    assert (row.method, row.student, row.data, row.epochs) == ("kd", "mlp hidden=[8]", "toy2d", 3)
    assert row.teacher == "mlp hidden=[32,32]"
    assert (row.temperature, row.w_ce, row.w_kd) == (2.0, 0.1, 0.9)
    last = store.epoch_metrics(run_id).iloc[-1]
    assert row.test_acc == last["test.acc"] and row.test_ece == last["test.ece"]


def test_runs_summary_takes_a_schedule_as_its_mean_and_a_run_without_epochs_as_nan():
    store = RunStore()
    schedule = {"kind": "linear", "start": 4.0, "end": 1.0}
    run_id = store.create_run(validate_config(tiny_config(method__temperature=schedule, epochs=4)))
    row = runs_summary(store, [run_id]).iloc[0]
    assert row.temperature == pytest.approx(np.mean([4.0, 3.0, 2.0, 1.0]))
    assert np.isnan(row.test_acc) and row.status == "queued"
    assert runs_summary(store, []).empty


def test_teacher_run_id_finds_the_run_that_trained_the_teacher(trained):
    store, run_id = trained
    teacher = teacher_run_id(store, run_id)
    assert store.run(teacher)["kind"] == "teacher"
    assert teacher_run_id(store, teacher) is None  # a teacher run has no teacher


def test_route_epochs_and_load_student_read_the_weights_after_each_epoch(trained):
    store, run_id = trained
    assert route_epochs(store, run_id) == [1, 2, 3]
    first = load_student(store, run_id, 1)
    saved = torch.load(store.run_dir(run_id) / "route" / "epoch_0001.pt", weights_only=True)
    assert all(torch.equal(first.state_dict()[k], v) for k, v in saved.items())
    assert not first.training and not any(p.requires_grad for p in first.parameters())
    final = load_student(store, run_id)
    assert all(torch.equal(final.state_dict()[k], v) for k, v in load_student(store, run_id, 3).state_dict().items())
    with pytest.raises(FileNotFoundError, match=r"route has epochs \[1, 2, 3\]"):
        load_student(store, run_id, 7)


def test_teacher_weights_are_found_without_training_anything(trained):
    store, run_id = trained
    config = store.config(run_id)
    path = teacher_weights(store, config)
    assert path.name == "model.pt" and path.parent.parent == store.home / "teachers"
    teacher = load_teacher(store, run_id)
    assert not teacher.training
    untrained = validate_config(tiny_config(teacher__model={"name": "mlp", "hidden": [5]}))
    assert teacher_weights(store, untrained) is None
    assert teacher_weights(store, validate_config(tiny_config(method={"name": "ce"}, teacher=None))) is None
    assert len(list((store.home / "teachers").glob("*/model.pt"))) == 1


def test_predict_proba_sums_to_one_and_softens_with_temperature(trained):
    store, run_id = trained
    teacher = load_teacher(store, run_id)
    x = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)
    sharp, soft = predict_proba(teacher, x), predict_proba(teacher, x, temperature=5.0)
    assert sharp.shape == (50, 2) and np.allclose(sharp.sum(1), 1, atol=1e-5)
    assert np.all(np.abs(soft - 0.5) <= np.abs(sharp - 0.5) + 1e-6)


def test_grid_probabilities_cover_the_points_row_by_y(trained):
    store, run_id = trained
    points = np.array([[0.0, -1.0], [2.0, 1.0]], dtype=np.float32)
    xs, ys = plane_grid(points, resolution=7, margin=0.1)
    assert xs[0] < 0 < 2 < xs[-1] and ys[0] < -1 < 1 < ys[-1] and len(xs) == len(ys) == 7
    student = load_student(store, run_id)
    probs = grid_probabilities(student, xs, ys)
    assert probs.shape == (7, 7, 2)
    assert np.allclose(probs[2, 5], predict_proba(student, np.array([[xs[5], ys[2]]]))[0], atol=1e-6)


def test_coefficient_at_follows_the_schedule_and_defaults_for_methods_without_it():
    config = validate_config(tiny_config(method__temperature={"kind": "linear", "start": 4.0, "end": 2.0}))
    assert [coefficient_at(config, "temperature", e) for e in range(3)] == [4.0, 3.0, 2.0]
    ce = validate_config(tiny_config(method={"name": "ce"}))
    assert coefficient_at(ce, "temperature", 0) == 1.0


def test_softmax_table_is_softmax_of_logits_over_t():
    table = softmax_table(np.array([0.0, np.log(3.0)]), [1.0, 2.0], ["a", "b"])
    assert table[table.temperature == 1.0].probability.tolist() == pytest.approx([0.25, 0.75])
    half = 3.0**0.5
    assert table[table.temperature == 2.0].probability.tolist() == pytest.approx([1 / (1 + half), half / (1 + half)])
    assert table["class"].tolist() == ["a", "b", "a", "b"]


def test_entropy_rises_with_temperature_toward_ln_k():
    curve = entropy_curve(np.array([5.0, 1.0, 0.0]), np.array([0.5, 1.0, 4.0, 1000.0]))
    assert curve.entropy.is_monotonic_increasing
    assert curve.entropy.iloc[-1] == pytest.approx(np.log(3), abs=1e-3)
    assert entropy_curve(np.zeros(4), np.array([1.0])).entropy.iloc[0] == pytest.approx(np.log(4))


def test_run_logits_reproduce_the_runs_test_accuracy(trained):
    store, run_id = trained
    logits, labels, names = run_logits(store, run_id, "test")
    assert logits.shape == (len(labels), 2) and names == ["0", "1"]
    accuracy = (logits.argmax(1) == labels).mean()
    assert accuracy == pytest.approx(store.epoch_metrics(run_id)["test.acc"].iloc[-1])
