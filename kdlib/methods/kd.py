"""Hinton KD (Hinton, Vinyals, Dean, 2015, "Distilling the knowledge in a neural network").

    L = w_ce * CE(y, softmax(z_s)) + w_kd * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))

KL summed over classes and averaged over the batch ("batchmean"); T^2 keeps the soft term's
gradient on the scale of CE's as T grows. Checked against RepDistiller `distiller_zoo/KD.py`
(`kl_div(sum) * T^2 / N`) and mdistiller `distillers/KD.py` (`kl_div(none).sum(1).mean() * T^2`);
defaults are their CIFAR-100 setting: T=4, 0.1 CE + 0.9 KD. Unlike torchdistill's `KDLoss`, the
weights are named for what they weigh and T^2 is kept whatever the weights.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from kdlib.data.base import Batch
from kdlib.methods.base import METHODS, Distiller, StepOutput
from kdlib.ops import log_softmax
from kdlib.probes import logit_gradient_stats
from kdlib.schedules import Schedulable
from kdlib.spec import Spec


class Params(Spec):
    name: Literal["kd"] = "kd"
    temperature: Schedulable(gt=0) = Field(4.0, description="T: softens teacher and student distributions alike")
    w_ce: Schedulable(ge=0) = Field(0.1, description="weight of cross-entropy on the labels")
    w_kd: Schedulable(ge=0) = Field(0.9, description="weight of the soft term T^2 KL(teacher || student)")


def kd_loss_per_sample(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """T^2 * KL(softmax(z_t/T) || softmax(z_s/T)) per sample, in float32 whatever the autocast dtype."""
    return _kl_per_sample(student_logits, log_softmax(teacher_logits.float() / temperature), temperature) * temperature**2


def _kl_per_sample(student_logits: Tensor, log_p_teacher: Tensor, temperature: float) -> Tensor:
    log_p_student = log_softmax(student_logits.float() / temperature)
    return F.kl_div(log_p_student, log_p_teacher, reduction="none", log_target=True).sum(1)


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Batch mean of T^2 * KL(softmax(teacher/T) || softmax(student/T))."""
    return kd_loss_per_sample(student_logits, teacher_logits, temperature).mean()


def kd_step_loss(batch: Batch, student_logits: Tensor, teacher_logits: Tensor, temperature: float, w_ce: float,
                 w_kd: float) -> Tensor:
    """The batch's Hinton KD loss alone, in as few tensor operations as the plain PyTorch loop uses:
    on small models each operation costs more than its arithmetic."""
    log_p_teacher = F.log_softmax(teacher_logits.detach().float() / temperature, dim=1)
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    soft = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return torch.add(w_ce * F.cross_entropy(student_logits.float(), batch.y), soft, alpha=w_kd * temperature**2)


def kd_per_sample(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float, w_ce: float,
                  w_kd: float, with_gradient: bool = False) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Per sample: the KD loss, KL(teacher || student) at T, and each model's probability of the true
    class; and the loss's terms averaged over the samples (`loss_ce`, `loss_kd`). Rows may be a batch or a
    whole epoch: KD keeps its steps' logits and works these out once per epoch (`KD.finish_per_sample`).
    Differentiable in the student's logits (the loss is the mean of `loss_per_sample`), the rest detached.

    `with_gradient` adds the gradient probe's values (`probes.logit_gradient_stats`) from the gradient at
    the logits in closed form, d loss_i / d z_i = w_ce (p - e_y) + w_kd T (p^T - q^T), with p = softmax(z)
    and p^T, q^T the student's and teacher's softmax at T: what the trainer's probe reads after backward
    for other methods (`tests/methods/test_gradient_probe.py` checks that the two agree).
    """
    student, teacher = student_logits.float(), teacher_logits.float()
    log_p_student_t, log_p_teacher_t = log_softmax(student / temperature), log_softmax(teacher / temperature)
    kl = F.kl_div(log_p_student_t, log_p_teacher_t, reduction="none", log_target=True).sum(1)
    log_p_student = log_softmax(student)
    rows = labels[:, None]
    ce = -log_p_student.gather(1, rows).squeeze(1)
    ce_teacher = -log_softmax(teacher).gather(1, rows).squeeze(1)
    p_true = torch.stack([ce.detach(), ce_teacher.detach()]).neg_().exp_()  # CE is -log p_true
    per_sample = {
        "loss_per_sample": torch.add(w_ce * ce, kl, alpha=w_kd * temperature**2),
        "kl": kl.detach(),
        "p_true_student": p_true[0],
        "p_true_teacher": p_true[1],
    }
    if with_gradient:
        with torch.no_grad():
            probs = log_p_student.exp()
            ce_grad = probs.scatter_add(1, rows, torch.full_like(probs[:, :1], -1.0))
            gradient = torch.add(w_ce * ce_grad, log_p_student_t.exp() - log_p_teacher_t.exp(), alpha=w_kd * temperature)
            per_sample |= logit_gradient_stats(student.detach(), gradient, labels, ce_grad=ce_grad)
    with torch.no_grad():
        return per_sample, {"loss_ce": ce.nanmean(), "loss_kd": kl.nanmean() * temperature**2}


def kd_step_output(
    batch: Batch, student_logits: Tensor, teacher_logits: Tensor, temperature: float, w_ce: float, w_kd: float
) -> StepOutput:
    """The Hinton KD loss with its per-sample values and terms for this batch, in one pass; RCO and ProKT use
    it with other targets."""
    per_sample, terms = kd_per_sample(student_logits, teacher_logits.detach(), batch.y, temperature, w_ce, w_kd)
    loss = per_sample["loss_per_sample"].mean()
    per_sample["loss_per_sample"] = per_sample["loss_per_sample"].detach()
    return StepOutput(loss, terms, per_sample)


@METHODS.register("kd")
class KD(Distiller):
    Params = Params
    needs_teacher = True
    uses_teacher_logits_only = True

    def loss(self, batch: Batch, student_out: Tensor, teacher_out: Tensor | None) -> StepOutput:
        if not self.watch_gradients:  # no probe: the per-sample values are worked out as each step goes
            return kd_step_output(batch, student_out, teacher_out, *self._weights())
        # With the gradient probe, whose [N, K] logits would be kept anyway, each step keeps its logits
        # (references, no work) and the per-sample values and the probe's follow at the epoch's end.
        loss = kd_step_loss(batch, student_out, teacher_out, *self._weights())
        return StepOutput(loss, per_sample={"student_logits": student_out.detach(), "teacher_logits": teacher_out})

    def watch_logits(self, logits: Tensor) -> None:
        """Nothing to keep: KD's gradient at the logits has a closed form, worked out at the epoch's end."""

    def finish_per_sample(self, rows: dict[str, Tensor], labels: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        student, teacher = rows.pop("student_logits", None), rows.pop("teacher_logits", None)
        if student is None or teacher is None:
            return rows, {}
        labels = labels.to(student.device)  # a DataLoader split's labels stay on the CPU
        per_sample, terms = kd_per_sample(student, teacher, labels, *self._weights(), with_gradient=self.watch_gradients)
        return rows | per_sample, terms

    def _weights(self) -> tuple[float, float, float]:
        return self.coefficient("temperature"), self.coefficient("w_ce"), self.coefficient("w_kd")
