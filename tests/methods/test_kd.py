"""Hinton KD against the hand computations of METHODS.md section 2.3."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdlib.data.base import Batch
from kdlib.methods.kd import kd_loss, kd_loss_per_sample, kd_step_output
from kdlib.methods.label_smoothing import label_smoothing_loss

S, T = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[3.0, 2.0, 1.0]])


def test_kd_loss_matches_hand_computation_with_t_squared():
    assert kd_loss(S, T, temperature=4.0).item() == pytest.approx(1.319630, abs=1e-6)
    assert kd_loss_per_sample(S, T, 4.0).item() / 16 == pytest.approx(0.082477, abs=1e-6)


def test_weighted_kd_loss_matches_hand_computation():
    batch = Batch(S, torch.tensor([2]), torch.tensor([0]))
    out = kd_step_output(batch, S, T, temperature=4.0, w_ce=0.1, w_kd=0.9)
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
    batch = Batch(logits, labels, torch.arange(6))
    kd = kd_step_output(batch, logits, torch.zeros(6, 4), temperature=1.0, w_ce=1 - eps, w_kd=eps).loss
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


def test_kd_works_out_its_per_sample_values_at_the_epoch_end_as_each_step_would_have():
    from torch import nn

    from kdlib.methods import METHODS
    from kdlib.methods.base import MethodContext
    from kdlib.trainer import ColumnTable

    torch.manual_seed(0)
    n, k, temperature = 10, 3, 3.0
    labels, student_logits, teacher_logits = torch.randint(0, k, (n,)), torch.randn(n, k), torch.randn(n, k)
    kd = METHODS.get("kd")
    context = MethodContext(k, n, 2, torch.device("cpu"), None, None, None, None)
    distiller = kd(kd.Params(temperature=temperature, w_ce=0.3, w_kd=0.7), nn.Linear(2, k), nn.Linear(2, k), context)
    distiller.on_epoch_start(0)
    rows, steps = ColumnTable(n, torch.device("cpu")), []
    for index in (torch.tensor([7, 2, 5, 0]), torch.tensor([9, 1, 3, 8]), torch.tensor([4, 6])):  # batches of 4, 4, 2
        batch = Batch(student_logits[index], labels[index], index)
        out = distiller.loss(batch, student_logits[index].requires_grad_(), teacher_logits[index])
        steps.append((index, kd_step_output(batch, student_logits[index], teacher_logits[index], temperature, 0.3, 0.7)))
        assert out.loss.item() == pytest.approx(steps[-1][1].loss.item(), abs=1e-6)
        assert not out.terms  # nothing worked out per step
        rows.write(index, out.per_sample)
    per_sample, terms = distiller.finish_per_sample(rows.columns(), labels)
    assert set(per_sample) == {"loss_per_sample", "kl", "p_true_student", "p_true_teacher", "logit_grad_norm",
                               "logit_grad_ratio", "logit_grad_ratio_true"}
    for index, step in steps:
        for key, value in step.per_sample.items():
            assert torch.allclose(per_sample[key][index], value, atol=1e-6), key
    for key in ("loss_ce", "loss_kd"):  # the epoch's term: the batch means weighted by the batch sizes
        weighted = sum(len(index) * step.terms[key] for index, step in steps) / n
        assert terms[key].item() == pytest.approx(weighted.item(), abs=1e-6)


def test_without_the_gradient_probe_kd_works_out_its_values_each_step_and_keeps_no_logits():
    from torch import nn

    from kdlib.methods import METHODS
    from kdlib.methods.base import MethodContext

    kd = METHODS.get("kd")
    distiller = kd(kd.Params(), nn.Linear(2, 3), nn.Linear(2, 3),
                   MethodContext(3, 4, 1, torch.device("cpu"), None, None, None, None))
    distiller.watch_gradients = False  # probes.grad_stats or probes.per_sample false: no [N, K] tables kept
    distiller.on_epoch_start(0)
    batch = Batch(torch.randn(4, 2), torch.tensor([0, 1, 2, 0]), torch.arange(4))
    student, teacher = torch.randn(4, 3), torch.randn(4, 3)
    out = distiller.loss(batch, student, teacher)
    expected = kd_step_output(batch, student, teacher, 4.0, 0.1, 0.9)
    assert set(out.per_sample) == {"loss_per_sample", "kl", "p_true_student", "p_true_teacher"}
    assert set(out.terms) == {"loss_ce", "loss_kd"}
    assert torch.allclose(out.per_sample["kl"], expected.per_sample["kl"])
