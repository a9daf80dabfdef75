"""Hinton KD (Hinton, Vinyals, Dean, 2015, "Distilling the knowledge in a neural network").

    L = w_ce * CE(y, softmax(z_s)) + w_kd * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))

KL summed over classes and averaged over the batch ("batchmean"); T^2 keeps the soft term's
gradient on the scale of CE's as T grows. Checked against RepDistiller `distiller_zoo/KD.py`
(`kl_div(sum) * T^2 / N`) and mdistiller `distillers/KD.py` (`kl_div(none).sum(1).mean() * T^2`);
defaults are their CIFAR-100 setting: T=4, 0.1 CE + 0.9 KD. Unlike torchdistill's `KDLoss`, the
weights are named for what they weigh and T^2 is kept whatever the weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from kdlib.data.base import Batch
from kdlib.methods.base import Distiller, StepOutput, common_values
from kdlib.schedules import Schedulable
from kdlib.spec import Spec


class Params(Spec):
    temperature: Schedulable(gt=0) = Field(4.0, description="T: softens teacher and student distributions alike")
    w_ce: Schedulable(ge=0) = Field(0.1, description="weight of cross-entropy on the labels")
    w_kd: Schedulable(ge=0) = Field(0.9, description="weight of the soft term T^2 KL(teacher || student)")


def softened_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """KL(softmax(z_t/T) || softmax(z_s/T)) per sample, in float32 whatever the autocast dtype."""
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="none", log_target=True).sum(1)


def kd_loss_per_sample(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """T^2 * KL(softmax(z_t/T) || softmax(z_s/T)) per sample."""
    return softened_kl(student_logits, teacher_logits, temperature) * temperature**2


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Batch mean of T^2 * KL(softmax(teacher/T) || softmax(student/T))."""
    return kd_loss_per_sample(student_logits, teacher_logits, temperature).mean()


def kd_step(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float, w_ce: float,
            w_kd: float) -> StepOutput:
    """The KD loss of a batch, its terms and per-sample values; RCO and ProKT use it with other teachers."""
    teacher_logits = teacher_logits.detach()
    ce = F.cross_entropy(student_logits.float(), labels, reduction="none")
    ce_teacher = F.cross_entropy(teacher_logits.float(), labels, reduction="none")
    kl = softened_kl(student_logits, teacher_logits, temperature)
    per_sample_loss = w_ce * ce + w_kd * temperature**2 * kl
    p_true = torch.stack([ce.detach(), ce_teacher]).neg_().exp_()  # CE is -log p(true class)
    per_sample = {
        "loss_per_sample": per_sample_loss.detach(),
        "kl": kl.detach(),
        "p_true_student": p_true[0],
        "p_true_teacher": p_true[1],
    }
    terms = {"loss_ce": ce.mean().detach(), "loss_kd": kl.mean().detach() * temperature**2}
    return StepOutput(per_sample_loss.mean(), terms, per_sample)


class KD(Distiller):
    Params = Params
    needs_teacher = True
    per_sample_values = common_values("loss_per_sample", "kl", "p_true_student", "p_true_teacher")

    def loss(self, batch: Batch, student_logits: Tensor, teacher_logits: Tensor | None) -> StepOutput:
        temperature, w_ce, w_kd = (self.coefficient(k) for k in ("temperature", "w_ce", "w_kd"))
        return kd_step(student_logits, teacher_logits, batch.y, temperature, w_ce, w_kd)
