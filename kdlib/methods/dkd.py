"""DKD: decoupled knowledge distillation (Zhao, Cui, Song, Qiu, Liang, CVPR 2022, "Decoupled Knowledge
Distillation").

KD's KL splits into a term on the target class and a term on the other classes; DKD weighs them
apart. With p = softmax(z / T), b = [p_y, 1 - p_y] the binary target/non-target distribution and
p^ the distribution over the non-target classes (p_k / (1 - p_y), k != y):

    TCKD = T^2 KL(b_teacher || b_student)
    NCKD = T^2 KL(p^_teacher || p^_student)
    L    = w_ce CE(y, softmax(z_s)) + alpha TCKD + beta NCKD          (each a batch mean)

T^2 keeps both soft terms' gradients on the scale of CE's, as in KD. Checked against
megvii-research/mdistiller `mdistiller/distillers/DKD.py` (commit a08d46f; tests/methods/test_dkd.py
transcribes its `dkd_loss`). Defaults are its CIFAR-100 setting (`engine/cfg.py`): alpha 1, beta 8,
T 4, CE weight 1; some pairs use beta 2 or 6, ImageNet beta 0.5 to 2 with T 1.
Deviations: mdistiller multiplies alpha TCKD + beta NCKD by min(epoch / 20, 1) (1-based epochs);
here that warm-up is a linear schedule on alpha and beta (configs/dkd.yaml). It computes NCKD by
subtracting 1000 from the target logit, and TCKD as the log of summed probabilities; here NCKD drops
the target column and TCKD is a log-softmax over [z_y, logsumexp of the other z]: the same values to
float precision, and finite where mdistiller's 1 - p_y underflows to 0 (a student sure of the label).
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
    alpha: Schedulable(ge=0) = Field(1.0, description="alpha: weight of TCKD, the target-class term (1 in the paper)")
    beta: Schedulable(ge=0) = Field(
        8.0, description="beta: weight of NCKD, the non-target term (CIFAR-100: 8, some pairs 2 or 6; ImageNet 0.5-2)"
    )
    temperature: Schedulable(gt=0) = Field(4.0, description="T: softens teacher and student in both terms")
    w_ce: Schedulable(ge=0) = Field(1.0, description="weight of cross-entropy on the labels")


def non_target_logits(logits: Tensor, labels: Tensor) -> Tensor:
    """The [N, K - 1] logits of the classes other than each sample's label."""
    other = torch.ones_like(logits, dtype=torch.bool).scatter_(1, labels[:, None], False)
    return logits[other].view(len(logits), -1)


def binary_log_probs(logits: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """[log p_y, log(1 - p_y)] at temperature T, in float32: the log-softmax of two logits, the target's and
    the logsumexp of the others'. Same values as log of summed probabilities, finite where 1 - p_y underflows."""
    z = logits.float() / temperature
    target = z.gather(1, labels[:, None]).squeeze(1)
    return F.log_softmax(torch.stack([target, non_target_logits(z, labels).logsumexp(1)], dim=1), dim=1)


def tckd_per_sample(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """T^2 KL([p_y, 1 - p_y] teacher || student) per sample."""
    log_student = binary_log_probs(student_logits, labels, temperature)
    log_teacher = binary_log_probs(teacher_logits.detach(), labels, temperature)
    return F.kl_div(log_student, log_teacher, reduction="none", log_target=True).sum(1) * temperature**2


def nckd_per_sample(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """T^2 KL over the non-target classes (teacher || student) per sample; 0 with 2 classes."""
    log_student = F.log_softmax(non_target_logits(student_logits.float(), labels) / temperature, dim=1)
    log_teacher = F.log_softmax(non_target_logits(teacher_logits.detach().float(), labels) / temperature, dim=1)
    return F.kl_div(log_student, log_teacher, reduction="none", log_target=True).sum(1) * temperature**2


def dkd_loss(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, alpha: float, beta: float, temperature: float
) -> Tensor:
    """Batch mean of alpha TCKD + beta NCKD: mdistiller's `dkd_loss`, without CE and warm-up."""
    tckd = tckd_per_sample(student_logits, teacher_logits, labels, temperature)
    nckd = nckd_per_sample(student_logits, teacher_logits, labels, temperature)
    return (alpha * tckd + beta * nckd).mean()


class DKD(Distiller):
    Params = Params
    needs_teacher = True
    per_sample_values = common_values("loss_per_sample", "p_true_student", "p_true_teacher") | {
        "tckd": Value("TCKD", "T^2 KL of the binary [p(true), 1 - p(true)] distributions, teacher || student"),
        "nckd": Value("NCKD", "T^2 KL of the distributions over the other classes, teacher || student"),
    }

    def loss(self, batch: Batch, student_logits: Tensor, teacher_logits: Tensor | None) -> StepOutput:
        alpha, beta, temperature, w_ce = (self.coefficient(k) for k in ("alpha", "beta", "temperature", "w_ce"))
        labels, teacher_logits = batch.y, teacher_logits.detach()
        ce = F.cross_entropy(student_logits.float(), labels, reduction="none")
        tckd = tckd_per_sample(student_logits, teacher_logits, labels, temperature)
        nckd = nckd_per_sample(student_logits, teacher_logits, labels, temperature)
        per_sample_loss = w_ce * ce + alpha * tckd + beta * nckd
        terms = {"loss_ce": ce.mean().detach(), "loss_tckd": tckd.mean().detach(), "loss_nckd": nckd.mean().detach()}
        per_sample = {
            "loss_per_sample": per_sample_loss.detach(),
            "p_true_student": true_class_prob(student_logits.detach(), labels),
            "p_true_teacher": true_class_prob(teacher_logits, labels),
            "tckd": tckd.detach(),
            "nckd": nckd.detach(),
        }
        return StepOutput(per_sample_loss.mean(), terms, per_sample)
