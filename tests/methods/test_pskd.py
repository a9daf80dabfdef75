"""PS-KD against the hand computations and buffer rules of METHODS.md section 4."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdlib.data.base import Batch, TensorSplit
from kdlib.methods.base import MethodContext
from kdlib.methods.pskd import (
    PSKD,
    Params,
    pskd_alpha,
    pskd_logit_gradient,
    pskd_loss,
    pskd_other_rescaling,
    pskd_rescaling,
    pskd_targets,
)
from kdlib.runner import execute
from kdlib.store import RunStore
from tests.conftest import StopAfter

# METHODS.md section 4, test (1)
LOGITS, PREV, LABEL, ALPHA = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.7, 0.2, 0.1]]), torch.tensor([0]), 0.4


def make_distiller(train_size=10, num_classes=3, total_epochs=300, **params) -> PSKD:
    context = MethodContext(num_classes, train_size, total_epochs, torch.device("cpu"))
    return PSKD(Params(**params), nn.Linear(4, num_classes), None, context)


def test_targets_loss_and_gradient_match_hand_computation():
    targets = pskd_targets(LABEL, PREV, ALPHA)
    assert torch.allclose(targets, torch.tensor([[0.88, 0.08, 0.04]]), atol=1e-6)
    assert pskd_loss(LOGITS, targets).item() == pytest.approx(0.449846, abs=1e-6)
    gradient = pskd_logit_gradient(LOGITS, targets)
    assert torch.allclose(gradient, torch.tensor([[-0.036205, 0.034195, 0.002010]]), atol=1e-6)
    assert gradient[0, 1:].sum().item() == pytest.approx(0.036205, abs=1e-6)  # = -d_g


def test_true_class_rescaling_matches_hand_computation():
    p = F.softmax(LOGITS, dim=1)
    w_gt = pskd_rescaling(p[:, 0], PREV[:, 0], ALPHA)
    assert w_gt.item() == pytest.approx(0.231780, abs=1e-6)
    gradient = pskd_logit_gradient(LOGITS, pskd_targets(LABEL, PREV, ALPHA))
    assert w_gt.item() == pytest.approx((gradient[0, 0] / (p[0, 0] - 1)).item(), abs=1e-6)
    # the summed non-true gradient is rescaled by the same w_gt
    assert (gradient[0, 1:].sum() / p[0, 1:].sum()).item() == pytest.approx(w_gt.item(), abs=1e-6)


def test_other_class_rescaling_is_the_ratio_of_norms_off_the_true_class():
    p = F.softmax(LOGITS, dim=1)[0]
    expected = torch.linalg.norm(torch.stack([p[1] - 0.08, p[2] - 0.04])) / torch.linalg.norm(p[1:])
    ratio = pskd_other_rescaling(LOGITS, pskd_targets(LABEL, PREV, ALPHA), LABEL)
    assert ratio.item() == pytest.approx(expected.item(), abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_closed_form_gradient_matches_autograd_in_float64(seed):
    generator = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(16, 7, generator=generator, dtype=torch.float64)).requires_grad_()
    labels = torch.randint(0, 7, (16,), generator=generator)
    prev = F.softmax(torch.randn(16, 7, generator=generator, dtype=torch.float64), dim=1)
    targets = pskd_targets(labels, prev, 0.37)
    (autograd,) = torch.autograd.grad(pskd_loss(logits, targets), logits)
    closed_form = pskd_logit_gradient(logits.detach(), targets) / 16  # the batch mean's 1/N
    assert (autograd - closed_form).abs().max().item() < 1e-6


def test_alpha_schedule_for_300_epochs():
    assert pskd_alpha(0, 300, 0.8) == pytest.approx(0.002667, abs=1e-6)
    assert pskd_alpha(149, 300, 0.8) == pytest.approx(0.4, abs=1e-12)
    assert pskd_alpha(299, 300, 0.8) == pytest.approx(0.8, abs=1e-12)
    distiller = make_distiller()
    distiller.on_epoch_start(149)
    assert distiller.coefficients() == {"alpha_t": pytest.approx(0.4)}


def test_epoch_zero_loss_is_cross_entropy_exactly():
    distiller = make_distiller()
    distiller.on_epoch_start(0)
    logits = 3 * torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    out = distiller.loss(Batch(torch.zeros(6, 4), labels, torch.arange(6)), logits, None)
    ce = F.cross_entropy(logits, labels, reduction="none")
    assert torch.equal(out.per_sample["loss_per_sample"], ce)
    assert torch.equal(out.loss, ce.mean())
    # the built-in mean sums in another order: equal up to float32 rounding
    assert out.loss.item() == pytest.approx(F.cross_entropy(logits, labels).item(), abs=1e-6)
    assert torch.equal(out.per_sample["target_true"], torch.ones(6))


def test_buffer_rows_after_a_step_are_the_detached_softmax():
    torch.manual_seed(0)
    distiller = make_distiller()
    distiller.on_epoch_start(0)
    x, labels, index = torch.randn(4, 4), torch.tensor([0, 1, 2, 0]), torch.tensor([7, 2, 5, 0])
    logits = distiller.student(x)
    distiller.loss(Batch(x, labels, index), logits, None).loss.backward()
    assert torch.equal(distiller.buffer.probs[index], F.softmax(logits.detach(), dim=1))
    assert not distiller.buffer.probs.requires_grad and distiller.buffer.probs.grad_fn is None
    untouched = torch.tensor([1, 3, 4, 6, 8, 9])
    assert not distiller.buffer.probs[untouched].any() and not distiller.buffer.seen[untouched].any()


def test_next_epoch_target_is_the_previous_epoch_prediction_not_the_current_one():
    torch.manual_seed(0)
    distiller = make_distiller(total_epochs=4)
    batch = Batch(torch.randn(3, 4), torch.tensor([0, 1, 2]), torch.tensor([4, 1, 8]))
    distiller.on_epoch_start(0)
    first = distiller.loss(batch, torch.randn(3, 3), None)
    distiller.on_epoch_start(1)
    second_logits = torch.randn(3, 3)
    second = distiller.loss(batch, second_logits, None)
    assert torch.equal(second.per_sample["prev_p_true"], first.per_sample["p_true_student"])
    alpha = pskd_alpha(1, 4, 0.8)
    assert torch.allclose(second.per_sample["target_true"], 1 - alpha * (1 - first.per_sample["p_true_student"]))
    assert torch.equal(second.per_sample["alpha_t"], torch.full((3,), alpha))


def test_shuffled_batches_keep_row_i_for_dataset_index_i():
    torch.manual_seed(0)
    split = TensorSplit(torch.randn(23, 4), torch.randint(0, 3, (23,)))
    distiller = make_distiller(train_size=23)
    distiller.on_epoch_start(0)
    with torch.no_grad():
        for batch in split.batches(5, shuffle=True, generator=torch.Generator().manual_seed(3)):
            distiller.loss(batch, distiller.student(batch.x), None)
        expected = F.softmax(distiller.student(split.x), dim=1)  # row i from sample i, whatever the order
    assert torch.allclose(distiller.buffer.probs, expected, atol=1e-7)
    assert distiller.buffer.seen.all()


@pytest.mark.parametrize("buffer_dtype", ["float32", "float16"])
def test_state_dict_round_trip_is_bit_exact(buffer_dtype):
    torch.manual_seed(0)
    distiller = make_distiller(buffer_dtype=buffer_dtype)
    distiller.on_epoch_start(0)
    distiller.loss(
        Batch(torch.randn(4, 4), torch.tensor([0, 1, 2, 1]), torch.tensor([3, 1, 9, 6])), torch.randn(4, 3), None
    )
    saved = io.BytesIO()
    torch.save(distiller.state_dict(), saved)
    saved.seek(0)
    restored = make_distiller(buffer_dtype=buffer_dtype)
    restored.load_state_dict(torch.load(saved, weights_only=True))
    assert restored.buffer.probs.dtype == getattr(torch, buffer_dtype)
    assert torch.equal(restored.buffer.probs, distiller.buffer.probs)
    assert torch.equal(restored.buffer.seen, distiller.buffer.seen)
    with pytest.raises(ValueError, match="train size x classes"):
        make_distiller(train_size=11).load_state_dict(distiller.state_dict())


def test_rescaling_stays_finite_when_the_model_is_certain():
    logits, labels = torch.tensor([[60.0, 0.0, 0.0]]), torch.tensor([0])
    targets = pskd_targets(labels, torch.tensor([[0.5, 0.25, 0.25]]), 0.8)
    assert torch.isfinite(pskd_rescaling(F.softmax(logits, 1)[:, 0], torch.tensor([0.5]), 0.8)).all()
    assert torch.isfinite(pskd_other_rescaling(logits, targets, labels)).all()


PSKD_KEYS = (
    "p_true_student",
    "loss_per_sample",
    "prev_p_true",
    "target_true",
    "alpha_t",
    "grad_scale_true",
    "grad_scale_other",
    "grad_norm",
)


def test_pskd_trains_through_the_trainer_and_resumes_with_its_buffer(tiny):
    store, config = RunStore(), tiny(method={"name": "pskd"}, teacher=None)
    run_id = store.create_run(config)
    assert execute(run_id, store, [StopAfter(store, run_id, 0)]) == "stopped"
    assert execute(run_id, store) == "done"
    arrays = store.per_sample(run_id, 2)
    for key in PSKD_KEYS:
        assert arrays[key].shape == arrays["label"].shape and np.isfinite(arrays[key]).all(), key
    assert np.allclose(arrays["alpha_t"], 0.8, atol=1e-3)
    assert store.epoch_metrics(run_id)["alpha_t"].tolist() == pytest.approx([0.8 / 3, 1.6 / 3, 0.8])
    # a run interrupted after epoch 0 ends where an uninterrupted one does, so the buffer came back
    straight = store.create_run(config)
    execute(straight, store)
    assert np.allclose(store.epoch_metrics(straight)["test.nll"], store.epoch_metrics(run_id)["test.nll"], atol=1e-6)
