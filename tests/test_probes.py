"""Calibration and bias-variance against hand computations (METHODS.md section 11)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdlib.analysis import bias_variance_of_run, bias_variance_of_runs
from kdlib.probes import bias_variance, calibration_bins, evaluate, expected_calibration_error, route_kl
from kdlib.runner import execute
from kdlib.store import RunStore


def test_ece_matches_hand_computation():
    assert expected_calibration_error([0.62, 0.68], [1, 0], num_bins=10) == pytest.approx(0.15)
    assert expected_calibration_error([0.62, 0.68], [1, 0], num_bins=15) == pytest.approx(0.53)


def test_reliability_bins_hold_counts_confidence_and_accuracy():
    bins = calibration_bins([0.62, 0.68, 0.95], [1, 0, 1], num_bins=10)
    assert bins["count"].tolist() == [0, 0, 0, 0, 0, 0, 2, 0, 0, 1]
    assert bins.loc[6, "confidence"] == pytest.approx(0.65) and bins.loc[6, "accuracy"] == pytest.approx(0.5)


def test_evaluate_reports_accuracy_nll_and_ece():
    logits = torch.log(torch.tensor([[0.62, 0.38], [0.32, 0.68]]))
    scalars, arrays = evaluate(logits, torch.tensor([0, 0]), ece_bins=10)
    assert scalars["acc"] == pytest.approx(0.5)
    assert scalars["nll"] == pytest.approx(-(np.log(0.62) + np.log(0.32)) / 2, abs=1e-6)
    assert scalars["ece"] == pytest.approx(0.15, abs=1e-6)
    assert arrays["predicted"].tolist() == [0, 1]


def logits_with_confidence(confidence: np.float32, classes: int = 16) -> torch.Tensor:
    """A row of float32 logits [a, 0, ..., 0] whose float32 confidence in `evaluate` is exactly `confidence`:
    a scanned over the float32 neighbours of log((K - 1) c / (1 - c))."""
    start = torch.tensor(np.log((classes - 1) * confidence / (1 - confidence)), dtype=torch.float32)
    candidates, up, down = [start], start, start
    for _ in range(1000):
        up, down = torch.nextafter(up, torch.tensor(np.inf)), torch.nextafter(down, torch.tensor(-np.inf))
        candidates += [up, down]
    rows = torch.zeros(len(candidates), classes)
    rows[:, 0] = torch.stack(candidates)
    hits = (torch.log_softmax(rows, 1).max(1).values.exp() == torch.tensor(confidence)).nonzero()
    return rows[hits[0, 0]]


def test_confidences_on_bin_edges_fall_in_the_same_bin_on_every_path():
    """(lo, hi] in float64 everywhere: k/15 in float64 is on an edge, so in bin k - 1; float32(k/15) lies
    above k/15 for k < 15, so in bin k. The float32 ceil(c * 15) that `evaluate` used put it in bin k - 1."""
    k = np.arange(1, 16)
    assert calibration_bins(k / 15, np.ones(15), 15)["count"].tolist() == [1] * 15
    wide = k[:-1] / 15
    assert calibration_bins(wide, np.ones(14), 15)["count"].tolist() == [1] * 14 + [0]
    assert calibration_bins(wide.astype(np.float32), np.ones(14), 15)["count"].tolist() == [0] + [1] * 14
    assert calibration_bins(torch.tensor(wide, dtype=torch.float32), torch.ones(14), 15)["count"].tolist() == (
        [0] + [1] * 14
    )
    # evaluate() on logits whose float32 confidences are exactly float32(k/15), k = 7..14 (one per edge)
    edges = np.float32(np.arange(7, 15) / 15)
    logits = torch.stack([logits_with_confidence(c) for c in edges])
    labels = torch.tensor([0, 1] * 4)  # half right, half wrong
    scalars, arrays = evaluate(logits, labels, ece_bins=15)
    assert arrays["confidence"].tolist() == edges.tolist()
    correct = arrays["predicted"] == labels.numpy()
    bins = calibration_bins(arrays["confidence"], correct, 15)
    assert arrays["reliability"][:, 0].tolist() == bins["count"].tolist() == [0] * 7 + [1] * 8
    assert scalars["ece"] == expected_calibration_error(arrays["confidence"], correct, 15)
    assert scalars["ece"] == pytest.approx(np.abs(correct - edges.astype(np.float64)).mean(), abs=1e-15)


def test_bias_variance_matches_hand_computation_and_sums_to_the_mean_loss():
    frame = bias_variance(np.array([[[0.7, 0.2, 0.1]], [[0.5, 0.3, 0.2]]]), np.array([0]))
    assert frame.bias[0] == pytest.approx(0.502643, abs=1e-6)
    assert frame.variance[0] == pytest.approx(0.022268, abs=1e-6)
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=(4, 50))
    labels = rng.integers(0, 5, 50)
    frame = bias_variance(probs, labels)
    assert np.allclose(frame.bias + frame.variance, frame.loss)
    assert (frame.variance >= -1e-12).all()
    same = bias_variance(np.stack([probs[0]] * 3), labels)
    assert np.allclose(same.variance, 0, atol=1e-12)


def test_bias_variance_of_float16_probabilities_is_never_negative():
    """Rows rounded to float16 (as the store keeps them) miss 1 by ~3e-4; renormalised, variance >= 0."""
    rng = np.random.default_rng(0)
    logits = 4 * rng.normal(size=(1, 300, 100)) + 0.01 * rng.normal(size=(5, 300, 100))
    probs = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float16)
    labels = rng.integers(0, 100, 300)
    assert np.abs(probs.astype(np.float64).sum(-1) - 1).max() > 1e-4
    frame = bias_variance(probs, labels)
    assert (frame.variance >= 0).all() and (bias_variance(np.stack([probs[0]] * 3), labels).variance >= 0).all()
    assert np.allclose(frame.bias + frame.variance, frame.loss, atol=1e-12)
    # the same maths unnormalised (the code before) went negative on these rows
    mean_log = np.log(np.clip(probs.astype(np.float64), 1e-12, None)).mean(0)
    assert np.log(np.exp(mean_log).sum(1)).max() > 1e-5
    # zeros (a float16 underflow) count as the floor 2^-25, not as 1e-12
    zero = np.array([[[1.0, 0.0]], [[0.5, 0.5]]], dtype=np.float16)
    assert bias_variance(zero, np.array([1])).loss[0] == pytest.approx((25 * np.log(2) + np.log(2)) / 2, abs=1e-6)


def test_route_kl_is_zero_on_the_checkpoint_the_student_equals():
    student = torch.softmax(torch.randn(8, 4), 1)
    route = torch.stack([torch.softmax(torch.randn(8, 4), 1), student])
    distances = route_kl(student, route)
    assert distances[1] == pytest.approx(0.0, abs=1e-6) and distances[0] > 0


def test_bias_variance_of_a_run_and_of_seeds_are_kept_in_the_store(tiny):
    store = RunStore()
    runs = [store.create_run(tiny(method={"name": "ce"}, seed=s, epochs=4)) for s in (0, 1)]
    for run_id in runs:
        execute(run_id, store)
    snapshot = bias_variance_of_run(store, runs[0], last=3)
    assert len(snapshot) == len(store.per_sample(runs[0], 3, "test")["label"]) and snapshot.epochs.iloc[0] == 3
    assert np.allclose(snapshot.bias + snapshot.variance, snapshot.loss, atol=1e-4)
    seeds = bias_variance_of_runs(store, runs)
    assert seeds.runs.iloc[0] == 2
    assert {name.split(".")[0] for name in store.analyses(runs[0])} == {"bias_variance"}
    assert np.allclose(store.analysis(runs[0], "bias_variance.test.last3").bias, snapshot.bias)
    with pytest.raises(ValueError, match="at least 2 runs"):
        bias_variance_of_runs(store, runs[:1])


@pytest.mark.parametrize("batch_size", [4, 64])
def test_splits_predicted_together_give_each_split_its_own_logits(batch_size, monkeypatch):
    from contextlib import nullcontext

    from kdlib import probes
    from kdlib.data.base import TensorSplit

    monkeypatch.setattr(probes, "PREDICT_BATCH", 6)  # per split: passes of 6 rows at batch 4, of 64 at 64
    monkeypatch.setattr(probes, "TOGETHER_ELEMENTS", 36 if batch_size == 64 else 35)  # 12 rows of 3: together?
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2)).train()
    splits = [TensorSplit(torch.randn(n, 3), torch.zeros(n)) for n in (5, 7)]
    passes = []
    model.register_forward_hook(lambda module, inputs, output: passes.append(len(inputs[0])))
    together = probes.predict_splits(model, splits, batch_size, torch.device("cpu"), nullcontext)
    assert passes == ([12] if batch_size == 64 else [5, 6, 1])
    model.eval()
    for split, logits in zip(splits, together, strict=True):
        assert torch.allclose(logits, model(split.x), atol=1e-6)
    model.train()
    probes.predict_splits(model, splits, batch_size, torch.device("cpu"), nullcontext)
    assert model.training  # put back in training mode
    assert probes.predict_splits(model, [], batch_size, torch.device("cpu"), nullcontext) == []  # eval_splits: []
