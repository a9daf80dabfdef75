"""Read-side helpers of the Inspect, Route and Method views and the lessons' closed forms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kdlib.data import load_data
from kdlib.events import EpochEnded, RunEnded, StepLogged
from kdlib.methods import Value
from kdlib.runner import execute
from kdlib.store import RunStore, StoreSink
from kdlib.validation import validate_config
from kdlib.views import (
    declared_keys,
    domain_confidence,
    has_route,
    head_probabilities,
    load_teacher,
    method_views,
    pskd_rescaling,
    regularization_flags,
    rescaling_summary,
    run_values,
    runs_with,
    sample_input,
    sample_probabilities,
    sample_trajectories,
    sample_views,
    search_weights,
    sibling_runs,
    trajectory_keys,
    value_label,
    wsl_weight,
)
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def wsl_run(tmp_path_factory):
    """A finished tiny WSL run on toy2d that kept its weights after every epoch."""
    store = RunStore(tmp_path_factory.mktemp("home"))
    run_id = store.create_run(validate_config(tiny_config(method={"name": "wsl"}, output={"route": {"every": 1}})))
    assert execute(run_id, store) == "done"
    return store, run_id


def written_run(tiny, per_sample=lambda epoch: {}, search=(), **config) -> tuple[RunStore, str]:
    store = RunStore()
    run_id = store.create_run(tiny(**config))
    sink = StoreSink(store, run_id)
    for step, scalars in enumerate(search):
        sink.emit(StepLogged(-1, step, scalars))
    for epoch in range(2):
        sink.emit(EpochEnded(epoch, epoch + 1, {"test.acc": 0.5}, per_sample(epoch)))
    sink.emit(RunEnded("done"))
    sink.close()
    return store, run_id


def test_the_closed_forms_match_methods_md():
    assert pskd_rescaling(0.4, 0.7, 0.843795) == pytest.approx(0.231780, abs=1e-5)
    assert pskd_rescaling(0.5, 0.9, 0.95) == pytest.approx(0.0, abs=1e-9)  # easy: no gradient left
    assert pskd_rescaling(0.5, 0.2, 0.3) == pytest.approx(0.428571, abs=1e-6)  # hard: keeps some
    assert wsl_weight(np.exp(-0.407606), np.exp(-1.407606)) == pytest.approx(0.251418, abs=1e-5)
    assert wsl_weight(0.5, 0.5) == pytest.approx(1 - np.exp(-1), abs=1e-6)  # teacher = student
    assert wsl_weight(0.5, 1 - 1e-9) == pytest.approx(1.0, abs=1e-6)  # a sure teacher: full weight


def test_a_run_offers_the_values_its_method_declares(tiny):
    def arrays(epoch):
        return {
            "train.mystery": np.array([0.1, 0.2]),
            "train.logit_grad_ratio_true": np.array([1.0, 0.5]),
            "train.weight": np.array([0.3, 0.9]),
            "train.probs": np.full((2, 2), 0.5),
            "test.label": np.array([0, 1]),
            "test.predicted": np.array([0, 0]),
            "test.p_true": np.array([0.6, 0.4]),
        }

    store, wsl = written_run(tiny, arrays, method={"name": "wsl"})
    assert trajectory_keys(store, wsl) == ["weight", "logit_grad_ratio_true"]  # the method's, then the probe's
    assert trajectory_keys(store, wsl, "test") == ["p_true", "predicted"]  # the evaluation's, in its order
    assert list(sample_trajectories(store, wsl, 1)) == ["weight", "logit_grad_ratio_true"]
    values = run_values(store, wsl)
    assert value_label(values, "weight") == "WSL weight" and value_label(values, "mystery") == "mystery"
    _, kd = written_run(tiny, arrays)
    assert trajectory_keys(store, kd) == ["logit_grad_ratio_true"]  # KD declares no weight


def test_declared_patterns_offer_every_key_they_hold():
    values = {"p_true_student": Value("p(true) student", ""), "p_true_head{n}": Value("p(true) head {n}", "")}
    present = ["p_true_head2", "other", "p_true_student", "p_true_head1"]
    assert declared_keys(values, present) == ["p_true_student", "p_true_head2", "p_true_head1"]
    assert value_label(values, "p_true_head2") == "p(true) head 2"


def test_sample_views_follow_the_stored_keys():
    generic = {"p_true_student", "logit_grad_ratio_true"}
    assert sample_views(generic, {"reliability"}) == ["rescaling", "calibration"]
    wsl = generic | {"weight", "p_true_teacher"}
    assert sample_views(wsl, {"probs", "reliability"}) == ["rescaling", "weights", "bias_variance", "calibration"]
    assert sample_views(set(), set()) == []


def test_rescaling_summary_splits_easier_and_harder_samples():
    samples = pd.DataFrame({"prev_p_true": [0.9, 0.8, 0.2, 0.1], "grad_scale_true": [-0.5, 0.1, 0.4, 0.6]})
    samples["p_true_student"] = samples.prev_p_true
    assert rescaling_summary(samples) == {"easier half": -0.2, "harder half": 0.5, "pushed down": 0.25}


def test_one_sample_of_a_finished_run(wsl_run):
    store, run_id = wsl_run
    data = load_data(store.config(run_id).data)
    assert sample_input(data, "train", 3).shape == (2,)
    series = sample_trajectories(store, run_id, 3)
    assert {"p_true_student", "p_true_teacher", "weight"} <= set(series) and series["weight"].index.tolist() == [
        0,
        1,
        2,
    ]
    assert sample_trajectories(store, run_id, 10_000) == {}
    train = sample_probabilities(store, run_id, 1, 3, "train", data)
    assert list(train) == ["teacher", "student"] and train["student"].sum() == pytest.approx(1, abs=1e-5)
    test = sample_probabilities(store, run_id, 2, 5, "test", data)
    stored = store.per_sample(run_id, 2, "test")["probs"][5]
    assert np.allclose(test["student"], stored)  # the stored probabilities of that epoch


def test_regularization_flags_from_the_stored_flag_or_the_teacher(wsl_run):
    store, run_id = wsl_run
    train = regularization_flags(store, run_id, "train")
    assert np.array_equal(train.to_numpy(), store.per_sample(run_id, 2, "train")["reg_sample"].astype(float))
    test = regularization_flags(store, run_id, "test")
    data = load_data(store.config(run_id).data)
    teacher = load_teacher(store, run_id, data)
    import torch

    with torch.no_grad():
        p_teacher = torch.softmax(teacher(data.test.x), 1)[torch.arange(len(data.test)), data.test.y].numpy()
    p_student = store.per_sample(run_id, 2, "test")["p_true"].astype(float)
    assert np.array_equal(test.to_numpy(), (p_teacher < p_student).astype(float))


def test_siblings_differ_only_in_seed(tiny):
    store = RunStore()
    first = store.create_run(tiny())
    seed = store.create_run(tiny(seed=3, output={"name": "again"}))
    store.create_run(tiny(epochs=5))
    assert sibling_runs(store, first) == [seed]


def test_runs_and_views_found_by_their_keys(tiny):
    def arrays(epoch):
        return {
            "train.p_true_head1": np.array([0.2, 0.4]),
            "train.p_true_student": np.array([0.6, 0.8]),
            "target.confidence_student": np.array([0.5, 0.7, 0.9]),
        }

    store, run_id = written_run(tiny, arrays, search=[{"dfa.alpha.stage1.1": 0.4, "dfa.alpha.stage1.2": 0.6}])
    assert method_views(store, run_id) == ["dfa_search", "heads", "domain"]
    assert search_weights(store, run_id).columns.tolist() == ["dfa.alpha.stage1.1", "dfa.alpha.stage1.2"]
    heads = head_probabilities(store, run_id)
    assert heads.columns.tolist() == ["head 1", "final"] and np.allclose(heads["head 1"], 0.3, atol=1e-3)
    confidence = domain_confidence(store, run_id, 1)
    assert list(confidence["source"]) == ["student"] and np.allclose(
        confidence["target"]["student"], [0.5, 0.7, 0.9], atol=1e-3
    )
    assert runs_with(store, {"p_true_head1"}) == [run_id] and runs_with(store, {"weight"}) == []
    assert not has_route(store, run_id)


def test_a_run_without_method_values_has_no_method_views(tiny):
    store, run_id = written_run(tiny, lambda e: {"train.p_true_student": np.array([0.5])})
    assert method_views(store, run_id) == [] and search_weights(store, run_id).empty
    assert head_probabilities(store, run_id).empty and domain_confidence(store, run_id, 0) == {}


def test_a_method_without_a_teacher_has_none_even_when_its_config_names_one(tiny):
    store = RunStore()
    run_id = store.create_run(tiny(method={"name": "pskd"}))
    assert load_teacher(store, run_id) is None
