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
from kdlib.schedules import Schedulable
from kdlib.spec import Spec


class Params(Spec):
    name: Literal["kd"] = "kd"
    temperature: Schedulable(gt=0) = Field(4.0, description="T: softens teacher and student distributions alike")
    w_ce: Schedulable(ge=0) = Field(0.1, description="weight of cross-entropy on the labels")
    w_kd: Schedulable(ge=0) = Field(0.9, description="weight of the soft term T^2 KL(teacher || student)")


def kd_loss_per_sample(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """T^2 * KL(softmax(z_t/T) || softmax(z_s/T)) per sample, in float32 whatever the autocast dtype."""
    return _kl_per_sample(student_logits, F.log_softmax(teacher_logits.float() / temperature, dim=1), temperature) * (
        temperature**2
    )


def _kl_per_sample(student_logits: Tensor, log_p_teacher: Tensor, temperature: float) -> Tensor:
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="none", log_target=True).sum(1)


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Batch mean of T^2 * KL(softmax(teacher/T) || softmax(student/T))."""
    return kd_loss_per_sample(student_logits, teacher_logits, temperature).mean()


def kd_step_output(
    batch: Batch, student_logits: Tensor, teacher_logits: Tensor, temperature: float, w_ce: float, w_kd: float
) -> StepOutput:
    """The Hinton KD loss and its per-sample values; RCO and ProKT use it with other targets.

    Written for few tensor operations: on small models each one costs more than its arithmetic.
    """
    teacher_logits = teacher_logits.detach().float()
    kl = _kl_per_sample(student_logits, F.log_softmax(teacher_logits / temperature, dim=1), temperature)
    ce = F.cross_entropy(student_logits.float(), batch.y, reduction="none")
    per_sample_loss = torch.add(w_ce * ce, kl, alpha=w_kd * temperature**2)
    with torch.no_grad():  # the per-sample values reuse what the loss computed: CE is -log p_true
        ce_teacher = F.cross_entropy(teacher_logits, batch.y, reduction="none")
        p_true = torch.stack([ce.detach(), ce_teacher]).neg_().exp_()
        per_sample = {
            "loss_per_sample": per_sample_loss.detach(),
            "kl": kl.detach(),
            "p_true_student": p_true[0],
            "p_true_teacher": p_true[1],
        }
    terms = {"loss_ce": ce.detach().mean(), "loss_kd": kl.detach().mean() * temperature**2}
    return StepOutput(per_sample_loss.mean(), terms, per_sample)


@METHODS.register("kd")
class KD(Distiller):
    Params = Params
    needs_teacher = True
    uses_teacher_logits_only = True

    def loss(self, batch: Batch, student_out: Tensor, teacher_out: Tensor | None) -> StepOutput:
        return kd_step_output(
            batch,
            student_out,
            teacher_out,
            self.coefficient("temperature"),
            self.coefficient("w_ce"),
            self.coefficient("w_kd"),
        )
