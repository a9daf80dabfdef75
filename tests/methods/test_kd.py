"""Hinton KD against the hand computations of METHODS.md section 2.3."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdlib.data.base import Batch
from kdlib.methods.kd import kd_loss, kd_loss_per_sample, kd_step
from kdlib.methods.label_smoothing import label_smoothing_loss

S, T = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[3.0, 2.0, 1.0]])


def test_kd_loss_matches_hand_computation_with_t_squared():
    assert kd_loss(S, T, temperature=4.0).item() == pytest.approx(1.319630, abs=1e-6)
    assert kd_loss_per_sample(S, T, 4.0).item() / 16 == pytest.approx(0.082477, abs=1e-6)


def test_weighted_kd_loss_matches_hand_computation():
    out = kd_step(S, T, torch.tensor([2]), temperature=4.0, w_ce=0.1, w_kd=0.9)
    assert out.loss.item() == pytest.approx(1.228428, abs=1e-6)
    assert out.terms["loss_ce"].item() == pytest.approx(0.407606, abs=1e-6)


def test_batch_reduction_is_batchmean_not_mean_over_classes():
    student = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    teacher = torch.tensor([[3.0, 2.0, 1.0], [1.0, 0.0, 0.0]])
    assert kd_loss(student, teacher, 4.0).item() / 16 == pytest.approx(0.044884, abs=1e-6)


def test_gradient_is_t_times_probability_difference_over_n():
    student = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(4, 5, dtype=torch.float64)
    kd_loss(student, teacher, 3.0).backward()
    expected = 3.0 * (F.softmax(student.detach() / 3, 1) - F.softmax(teacher / 3, 1)) / 4
    assert torch.allclose(student.grad.double(), expected, atol=1e-6)


def test_identical_logits_give_zero_loss():
    assert kd_loss(S, S, 2.0).item() == pytest.approx(0.0, abs=1e-7)


def test_kd_loss_is_float32_under_low_precision_inputs():
    assert kd_loss(S.half(), T.half(), 4.0).dtype == torch.float32


def test_label_smoothing_is_kd_with_a_uniform_teacher_at_t1():
    logits, labels, eps = torch.randn(6, 4), torch.randint(0, 4, (6,)), 0.2
    kd = kd_step(logits, torch.zeros(6, 4), labels, temperature=1.0, w_ce=1 - eps, w_kd=eps).loss
    assert kd.item() == pytest.approx(
        label_smoothing_loss(logits, labels, eps).item() - eps * torch.log(torch.tensor(4.0)).item(), abs=1e-5
    )


def test_coefficients_follow_a_param_changed_in_the_middle_of_an_epoch():
    from torch import nn

    from kdlib.methods import METHODS
    from kdlib.methods.base import MethodContext

    kd = METHODS.get("kd")
    context = MethodContext(2, 10, 5, torch.device("cpu"), None, None, None, None)
    distiller = kd(kd.Params(temperature=4.0), nn.Linear(2, 2), nn.Linear(2, 2), context)
    distiller.on_epoch_start(0)
    assert distiller.coefficient("temperature") == 4.0
    distiller.params.temperature = 2.0  # a notebook tuning it by hand
    assert distiller.coefficient("temperature") == 2.0
    distiller.params = kd.Params(temperature={"kind": "linear", "start": 1.0, "end": 5.0})
    assert distiller.coefficient("temperature") == 1.0
    distiller.on_epoch_start(4)
    assert distiller.coefficient("temperature") == 5.0


def test_kd_per_sample_values_average_to_its_loss_and_terms():
    from torch import nn

    from kdlib.methods import METHODS
    from kdlib.methods.base import MethodContext

    torch.manual_seed(0)
    kd = METHODS.get("kd")
    distiller = kd(kd.Params(temperature=3.0, w_ce=0.3, w_kd=0.7), nn.Linear(2, 3), nn.Linear(2, 3),
                   MethodContext(3, 5, 1, torch.device("cpu")))
    distiller.on_epoch_start(0)
    batch = Batch(torch.randn(5, 2), torch.tensor([0, 1, 2, 0, 1]), torch.arange(5))
    student, teacher = torch.randn(5, 3, requires_grad=True), torch.randn(5, 3)
    out = distiller.loss(batch, student, teacher)
    assert set(out.per_sample) == {"loss_per_sample", "kl", "p_true_student", "p_true_teacher"}
    assert set(out.per_sample) <= set(kd.per_sample_values)
    assert out.per_sample["loss_per_sample"].mean().item() == pytest.approx(out.loss.item(), abs=1e-6)
    assert (9 * out.per_sample["kl"].mean()).item() == pytest.approx(out.terms["loss_kd"].item(), abs=1e-6)
    p_true = F.softmax(student.detach(), 1).gather(1, batch.y[:, None]).squeeze(1)
    assert torch.allclose(out.per_sample["p_true_student"], p_true)
    assert not any(value.requires_grad for value in out.per_sample.values())
