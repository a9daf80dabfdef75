"""WSL against the hand computations of METHODS.md section 5."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdlib.methods.wsl import soft_cross_entropy, wsl_loss, wsl_weights
from kdlib.runner import execute
from kdlib.store import RunStore

# METHODS.md section 5, test (1)
S, T, Y = torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([[1.0, 2.0, 0.0]]), torch.tensor([0])


def test_weights_and_loss_match_hand_computation():
    out = wsl_loss(S, T, Y, temperature=2.0, alpha=2.25, w_ce=1.0)
    assert out.per_sample["ce_student"].item() == pytest.approx(0.407606, abs=1e-6)
    assert out.per_sample["ce_teacher"].item() == pytest.approx(1.407606, abs=1e-6)
    assert -math.log(1 - out.per_sample["weight"].item()) == pytest.approx(0.289574, abs=1e-6)  # r
    assert wsl_weights(S, T, Y).item() == pytest.approx(0.251418, abs=1e-6)
    assert out.per_sample["reg_sample"].item() == 1.0 and out.terms["reg_fraction"].item() == 1.0
    assert soft_cross_entropy(S, T, 2.0)[0].item() == pytest.approx(1.119834, abs=1e-6)
    assert out.terms["loss_soft"].item() == pytest.approx(1.126183, abs=1e-6)
    assert out.loss.item() == pytest.approx(2.941518, abs=1e-6)


def test_kl_form_is_the_cross_entropy_less_the_teacher_entropy():
    out = wsl_loss(S, T, Y, temperature=2.0, alpha=2.25, w_ce=1.0)
    p_teacher = F.softmax(T / 2, dim=1)
    entropy = -(p_teacher * p_teacher.log()).sum()
    weight = out.per_sample["weight"]
    assert out.terms["loss_soft_kl"].item() == pytest.approx(
        out.terms["loss_soft"].item() - 4 * weight.item() * entropy.item(), abs=1e-6
    )


def test_weight_has_no_gradient_path():
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(8, 5, generator=generator, dtype=torch.float64).requires_grad_()
    teacher, labels = torch.randn(8, 5, generator=generator), torch.randint(0, 5, (8,), generator=generator)
    (grad,) = torch.autograd.grad(wsl_loss(student, teacher, labels, 3.0, 2.25, 1.0).loss, student)
    weight = wsl_weights(student, teacher, labels)
    assert not weight.requires_grad
    soft_ce, _ = soft_cross_entropy(student, teacher, 3.0)
    reference = F.cross_entropy(student.float(), labels) + 2.25 * 9 * (weight * soft_ce).mean()
    (expected,) = torch.autograd.grad(reference, student)
    assert torch.allclose(grad, expected, atol=1e-6)


def test_teacher_equal_to_student_gives_weight_one_minus_one_over_e():
    logits, labels = torch.tensor([[1.0, 0.0, -1.0, 0.5], [0.0, 2.0, 0.0, 0.0]]), torch.tensor([0, 3])
    out = wsl_loss(logits, logits, labels, 4.0, 2.25, 1.0)
    assert torch.allclose(out.per_sample["weight"], torch.full((2,), 0.632121), atol=1e-6)
    assert not out.per_sample["reg_sample"].any()


def test_confident_correct_teacher_gives_weight_near_one():
    teacher = torch.tensor([[40.0, 0.0, 0.0]])  # ce_t ~ 1e-17, below the 1e-7 floor
    assert wsl_weights(S, teacher, Y).item() == pytest.approx(1.0, abs=1e-6)


def test_weight_does_not_depend_on_temperature():
    generator = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(6, 5, generator=generator), torch.randn(6, 5, generator=generator)
    labels = torch.randint(0, 5, (6,), generator=generator)
    weights = [wsl_loss(student, teacher, labels, t, 2.25, 1.0).per_sample["weight"] for t in (1.0, 2.0, 8.0)]
    assert torch.equal(weights[0], weights[1]) and torch.equal(weights[0], weights[2])


@pytest.mark.parametrize("num_classes", [2, 7, 1000, 1001])
def test_number_of_classes_comes_from_the_logits(num_classes):
    generator = torch.Generator().manual_seed(num_classes)
    student, teacher = (
        torch.randn(3, num_classes, generator=generator),
        torch.randn(3, num_classes, generator=generator),
    )
    labels = torch.tensor([0, num_classes - 1, 1])
    out = wsl_loss(student, teacher, labels, 4.0, 2.25, 1.0)
    assert torch.isfinite(out.loss) and out.per_sample["weight"].shape == (3,)


def test_loss_is_float32_under_low_precision_inputs():
    assert wsl_loss(S.half(), T.half(), Y, 4.0, 2.25, 1.0).loss.dtype == torch.float32


WSL_KEYS = ("p_true_student", "p_true_teacher", "loss_per_sample", "weight", "reg_sample", "ce_student", "ce_teacher")


def test_wsl_trains_through_the_trainer_with_per_sample_values(tiny):
    store = RunStore()
    run_id = store.create_run(tiny(method={"name": "wsl", "temperature": 2.0}))
    assert execute(run_id, store) == "done"
    arrays = store.per_sample(run_id, 2)
    for key in (*WSL_KEYS, "kl"):
        assert arrays[key].shape == arrays["label"].shape and np.isfinite(arrays[key]).all(), key
    assert set(np.unique(arrays["reg_sample"])) <= {0.0, 1.0}
    fraction = store.epoch_metrics(run_id)["train.reg_fraction"]
    assert fraction.between(0, 1).all()
    assert fraction.iloc[-1] == pytest.approx(arrays["reg_sample"].astype(float).mean(), abs=1e-6)
