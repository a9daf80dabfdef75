"""Plain cross-entropy on the labels: the no-teacher baseline."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdlib.data.base import Batch
from kdlib.methods.base import Distiller, StepOutput, common_values, true_class_prob
from kdlib.spec import Spec


class Params(Spec):
    pass


class CrossEntropy(Distiller):
    Params = Params
    per_sample_values = common_values("loss_per_sample", "p_true_student")

    def loss(self, batch: Batch, student_logits: Tensor, teacher_logits: Tensor | None) -> StepOutput:
        per_sample = F.cross_entropy(student_logits.float(), batch.y, reduction="none")
        loss = per_sample.mean()
        p_true = true_class_prob(student_logits.detach(), batch.y)
        return StepOutput(loss, {"loss_ce": loss.detach()}, {"loss_per_sample": per_sample.detach(), "p_true_student": p_true})
