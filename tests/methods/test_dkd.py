"""DKD against mdistiller's own `dkd_loss` and a hand computation."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdlib.data.base import Batch
from kdlib.methods.dkd import DKD, dkd_loss, nckd_per_sample, tckd_per_sample
from kdlib.runner import execute
from kdlib.store import RunStore


# Transcribed verbatim from megvii-research/mdistiller, mdistiller/distillers/DKD.py, read at commit
# a08d46f10d6102bd6e3f258ca5ac880b020ea259 (the file unchanged since e8c5bb3, "init"). Kept in its own layout.
# fmt: off
def reference_dkd_loss(logits_student, logits_teacher, target, alpha, beta, temperature):
    gt_mask = _get_gt_mask(logits_student, target)
    other_mask = _get_other_mask(logits_student, target)
    pred_student = F.softmax(logits_student / temperature, dim=1)
    pred_teacher = F.softmax(logits_teacher / temperature, dim=1)
    pred_student = cat_mask(pred_student, gt_mask, other_mask)
    pred_teacher = cat_mask(pred_teacher, gt_mask, other_mask)
    log_pred_student = torch.log(pred_student)
    tckd_loss = (
        F.kl_div(log_pred_student, pred_teacher, size_average=False)
        * (temperature**2)
        / target.shape[0]
    )
    pred_teacher_part2 = F.softmax(
        logits_teacher / temperature - 1000.0 * gt_mask, dim=1
    )
    log_pred_student_part2 = F.log_softmax(
        logits_student / temperature - 1000.0 * gt_mask, dim=1
    )
    nckd_loss = (
        F.kl_div(log_pred_student_part2, pred_teacher_part2, size_average=False)
        * (temperature**2)
        / target.shape[0]
    )
    return alpha * tckd_loss + beta * nckd_loss


def _get_gt_mask(logits, target):
    target = target.reshape(-1)
    mask = torch.zeros_like(logits).scatter_(1, target.unsqueeze(1), 1).bool()
    return mask


def _get_other_mask(logits, target):
    target = target.reshape(-1)
    mask = torch.ones_like(logits).scatter_(1, target.unsqueeze(1), 0).bool()
    return mask


def cat_mask(t, mask1, mask2):
    t1 = (t * mask1).sum(dim=1, keepdims=True)
    t2 = (t * mask2).sum(1, keepdims=True)
    rt = torch.cat([t1, t2], dim=1)
    return rt
# fmt: on


def random_case(batch: int, num_classes: int, seed: int, scale: float = 3.0):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, num_classes, generator=generator) * scale
    teacher = torch.randn(batch, num_classes, generator=generator) * scale
    return student, teacher, torch.randint(0, num_classes, (batch,), generator=generator)


@pytest.mark.parametrize("batch, num_classes", [(1, 2), (8, 2), (5, 3), (16, 10), (64, 100), (3, 1000)])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0, 8.0])
def test_dkd_loss_matches_mdistiller(batch, num_classes, temperature):
    student, teacher, labels = random_case(batch, num_classes, seed=batch * num_classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # size_average is deprecated
        for alpha, beta in [(1.0, 8.0), (1.0, 0.0), (0.0, 1.0), (0.5, 2.0)]:
            expected = reference_dkd_loss(student, teacher, labels, alpha, beta, temperature)
            got = dkd_loss(student, teacher, labels, alpha, beta, temperature)
            assert got.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-5)


def test_gradient_matches_mdistiller():
    student, teacher, labels = random_case(32, 100, seed=7)
    student.requires_grad_()
    (got,) = torch.autograd.grad(dkd_loss(student, teacher, labels, 1.0, 8.0, 4.0), student)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (expected,) = torch.autograd.grad(reference_dkd_loss(student, teacher, labels, 1.0, 8.0, 4.0), student)
    assert torch.allclose(got, expected, atol=1e-6)


# Student [2, 1, 0], teacher [1, 2, 0], label 0, T = 2. At T = 2 the student's p = softmax([1, .5, 0]),
# so b_s = [0.506480, 0.493520]; the teacher's b_t = [0.307196, 0.692804]. Over the other classes,
# p^_s = softmax([.5, 0]) = [0.622459, 0.377541] and p^_t = softmax([1, 0]) = [0.731059, 0.268941].
S, T, Y = torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([[1.0, 2.0, 0.0]]), torch.tensor([0])


def test_three_classes_match_hand_computation():
    kl = lambda p, q: sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))  # noqa: E731
    tckd = 4 * kl([0.307196, 0.692804], [0.506480, 0.493520])
    nckd = 4 * kl([0.731059, 0.268941], [0.622459, 0.377541])
    assert tckd == pytest.approx(0.325562, abs=1e-5) and nckd == pytest.approx(0.105378, abs=1e-5)
    assert tckd_per_sample(S, T, Y, 2.0).item() == pytest.approx(0.325562, abs=1e-6)
    assert nckd_per_sample(S, T, Y, 2.0).item() == pytest.approx(0.105378, abs=1e-6)
    assert dkd_loss(S, T, Y, 1.0, 8.0, 2.0).item() == pytest.approx(1.168590, abs=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert reference_dkd_loss(S, T, Y, 1.0, 8.0, 2.0).item() == pytest.approx(1.168590, abs=1e-6)
    out = make_dkd(temperature=2.0).loss(Batch(S, Y, torch.tensor([0])), S, T)
    assert out.terms["loss_ce"].item() == pytest.approx(0.407606, abs=1e-6)
    assert out.loss.item() == pytest.approx(0.407606 + 1.168590, abs=1e-6)


def test_two_classes_have_no_non_target_term():
    student, teacher, labels = random_case(6, 2, seed=3)
    assert torch.equal(nckd_per_sample(student, teacher, labels, 4.0), torch.zeros(6))


def test_tckd_stays_finite_where_the_student_is_certain():
    student, teacher = torch.tensor([[200.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    # 1 - p_y = 2 exp(-200) underflows in float32: log 0 makes mdistiller's TCKD infinite
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert reference_dkd_loss(student, teacher, Y, 1.0, 0.0, 1.0).item() == math.inf
    p_other_teacher = (math.e + 1) / (math.e + 2)  # q, the teacher's 1 - p_y; TCKD = KL([1 - q, q] || [1, 2e^-200])
    expected = (1 - p_other_teacher) * math.log(1 - p_other_teacher) + p_other_teacher * (
        math.log(p_other_teacher) - math.log(2) + 200
    )
    assert tckd_per_sample(student, teacher, Y, 1.0).item() == pytest.approx(expected, rel=1e-6)


def test_gradient_reaches_the_student_and_not_the_teacher():
    student, teacher, labels = random_case(8, 5, seed=1)
    student.requires_grad_(), teacher.requires_grad_()
    out = make_dkd().loss(Batch(student, labels, torch.arange(8)), student, teacher)
    out.loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None
    assert not any(v.requires_grad for v in [*out.terms.values(), *out.per_sample.values()])


def test_per_sample_values_average_to_the_terms():
    student, teacher, labels = random_case(16, 10, seed=2)
    dkd = make_dkd(alpha=0.5, beta=6.0, w_ce=0.7)
    out = dkd.loss(Batch(student, labels, torch.arange(16)), student, teacher)
    assert set(out.per_sample) == set(DKD.per_sample_values)
    assert all(v.shape == (16,) for v in out.per_sample.values())
    assert out.per_sample["tckd"].mean().item() == pytest.approx(out.terms["loss_tckd"].item(), rel=1e-6)
    assert out.per_sample["nckd"].mean().item() == pytest.approx(out.terms["loss_nckd"].item(), rel=1e-6)
    assert out.per_sample["loss_per_sample"].mean().item() == pytest.approx(out.loss.item(), rel=1e-6)
    weighted = 0.7 * out.terms["loss_ce"] + 0.5 * out.terms["loss_tckd"] + 6.0 * out.terms["loss_nckd"]
    assert weighted.item() == pytest.approx(out.loss.item(), rel=1e-6)
    assert dkd_loss(student, teacher, labels, 0.5, 6.0, 4.0).item() == pytest.approx(
        0.5 * out.terms["loss_tckd"].item() + 6.0 * out.terms["loss_nckd"].item(), rel=1e-6
    )


def test_loss_is_float32_under_low_precision_inputs():
    student, teacher, labels = random_case(4, 10, seed=4)
    assert dkd_loss(student.half(), teacher.bfloat16(), labels, 1.0, 8.0, 4.0).dtype == torch.float32


def test_a_short_run_with_a_warm_up_schedule_trains_to_the_end(tiny):
    store = RunStore()
    method = {
        "name": "dkd",
        "alpha": {"kind": "linear", "start": 0.5, "end": 1.0, "end_epoch": 1},
        "beta": {"kind": "linear", "start": 4.0, "end": 8.0, "end_epoch": 1},
    }
    run_id = store.create_run(tiny(method=method, epochs=2))
    assert execute(run_id, store) == "done", store.run(run_id)["error"]
    assert np.isfinite(store.epoch_metrics(run_id)["train.loss"]).all()
    assert {"tckd", "nckd"} <= set(store.per_sample(run_id, 1))


def make_dkd(**params) -> DKD:
    from kdlib.methods.base import MethodContext

    context = MethodContext(num_classes=3, train_size=1, total_epochs=1, device=torch.device("cpu"))
    return DKD(DKD.Params(name="dkd", **params), torch.nn.Identity(), torch.nn.Identity(), context)
