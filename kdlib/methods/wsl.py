"""WSL: weighted soft labels (Zhou, Song, Chen, Zhou, Wang, Yuan, Zhang, ICLR 2021, "Rethinking Soft
Labels for Knowledge Distillation: A Bias-Variance Tradeoff Perspective").

Each sample's soft-label term is weighted by how much worse the student does than the teacher on
the true class, measured at temperature 1 and without gradient (METHODS.md section 5):

    r_i = max(CE(y, s_i) / (CE(y, t_i) + 1e-7), 0)        w_i = 1 - exp(-r_i)
    L   = w_ce CE(y, softmax(z_s)) + alpha T^2 (1/N) sum_i w_i CE(softmax(z_t,i / T), softmax(z_s,i / T))

The soft term is a cross-entropy, as in the official code; its gradient equals the KL's but its
value is larger by the teacher's entropy, so the KL form is logged beside it (`loss_soft_kl`).
A "regularization sample" is one where the teacher is worse on the true class than the student
(p_t,y < p_s,y at T = 1, equivalently r < 1 and w < 1 - 1/e).

Checked against bellymonster/Weighted-Soft-Label-Distillation `knowledge_distiller.py` and mmrazor
`models/losses/weighted_soft_label_distillation.py` (same ratio, 1e-7, clamp at 0, `T^2 * mean`,
hard loss with weight 1). Defaults are the CIFAR-100 setting from the authors (issue #2: T=4,
alpha=2.25); ImageNet used T=2, alpha=2.5. Deviations: the official training loop runs the teacher
in train mode and with gradient (`t_net.train()`, no `no_grad`), so its BN uses batch statistics;
kdlib keeps the teacher in eval mode under `no_grad` (the Distiller default), so numbers may differ
from the paper's. The number of classes comes from the logits, not a hard-coded 1000.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from kdlib.data.base import Batch
from kdlib.methods.base import Distiller, StepOutput, Value, common_values, true_class_prob
from kdlib.schedules import Schedulable
from kdlib.spec import Spec


class Params(Spec):
    temperature: Schedulable(gt=0) = Field(4.0, description="T: softens teacher and student in the soft term")
    alpha: Schedulable(ge=0) = Field(
        2.25, description="alpha: weight of the weighted soft term (CIFAR-100: 2.25; ImageNet: 2.5)"
    )
    w_ce: Schedulable(ge=0) = Field(1.0, description="weight of cross-entropy on the labels (1 in the paper)")


def wsl_weights_from_ce(ce_student: Tensor, ce_teacher: Tensor) -> Tensor:
    """w = 1 - exp(-max(ce_s / (ce_t + 1e-7), 0)); the 1e-7 and the clamp are the official code's."""
    ratio = (ce_student / (ce_teacher + 1e-7)).clamp_min(0.0)
    return 1 - torch.exp(-ratio)


def wsl_weights(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> Tensor:
    """Per-sample weights at temperature 1, detached: w never carries gradient."""
    ce_student = F.cross_entropy(student_logits.detach().float(), labels, reduction="none")
    ce_teacher = F.cross_entropy(teacher_logits.detach().float(), labels, reduction="none")
    return wsl_weights_from_ce(ce_student, ce_teacher)


def soft_cross_entropy(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """(CE, KL) of softmax(z_t/T) against softmax(z_s/T) per sample, in float32 whatever the autocast dtype."""
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    p_teacher = log_p_teacher.exp()
    return -(p_teacher * log_p_student).sum(1), (p_teacher * (log_p_teacher - log_p_student)).sum(1)


def wsl_loss(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float, alpha: float, w_ce: float
) -> StepOutput:
    """The WSL loss with its terms (`loss_ce`, `loss_soft` = T^2 mean w CE_T, `loss_soft_kl`, `reg_fraction`)."""
    teacher_logits = teacher_logits.detach()
    ce_student = F.cross_entropy(student_logits.float(), labels, reduction="none")
    ce_teacher = F.cross_entropy(teacher_logits.float(), labels, reduction="none")
    weight = wsl_weights_from_ce(ce_student.detach(), ce_teacher)
    soft_ce, soft_kl = soft_cross_entropy(student_logits, teacher_logits, temperature)
    soft = temperature**2 * weight * soft_ce
    per_sample_loss = w_ce * ce_student + alpha * soft
    p_true_student = true_class_prob(student_logits.detach(), labels)
    p_true_teacher = true_class_prob(teacher_logits, labels)
    reg_sample = (p_true_teacher < p_true_student).float()
    terms = {
        "loss_ce": ce_student.mean().detach(),
        "loss_soft": soft.mean().detach(),
        "loss_soft_kl": (temperature**2 * weight * soft_kl).mean().detach(),
        "reg_fraction": reg_sample.mean(),
    }
    per_sample = {
        "p_true_student": p_true_student,
        "p_true_teacher": p_true_teacher,
        "loss_per_sample": per_sample_loss.detach(),
        "weight": weight,
        "reg_sample": reg_sample,
        "ce_student": ce_student.detach(),
        "ce_teacher": ce_teacher,
        "kl": soft_kl.detach(),
    }
    return StepOutput(per_sample_loss.mean(), terms, per_sample)


class WSL(Distiller):
    Params = Params
    needs_teacher = True
    per_sample_values = common_values("p_true_student", "p_true_teacher", "loss_per_sample", "kl") | {
        "weight": Value("WSL weight", "w = 1 - exp(-CE_student / CE_teacher): the share of the soft term the sample keeps"),
        "reg_sample": Value("regularization sample", "1 where the teacher is worse than the student on the true class"),
        "ce_student": Value("CE student", "the student's cross-entropy on the label"),
        "ce_teacher": Value("CE teacher", "the teacher's cross-entropy on the label"),
    }

    def loss(self, batch: Batch, student_logits: Tensor, teacher_logits: Tensor | None) -> StepOutput:
        return wsl_loss(
            student_logits,
            teacher_logits,
            batch.y,
            self.coefficient("temperature"),
            self.coefficient("alpha"),
            self.coefficient("w_ce"),
        )
