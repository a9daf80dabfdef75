"""Plain cross-entropy on the labels: the no-teacher baseline."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from kdlib.data.base import Batch
from kdlib.methods.base import METHODS, Distiller, StepOutput, true_class_prob
from kdlib.spec import Spec


class Params(Spec):
    name: Literal["ce"] = "ce"


@METHODS.register("ce")
class CrossEntropy(Distiller):
    Params = Params

    def loss(self, batch: Batch, student_out: Tensor, teacher_out: Tensor | None) -> StepOutput:
        per_sample = F.cross_entropy(student_out.float(), batch.y, reduction="none")
        loss = per_sample.mean()
        return StepOutput(
            loss,
            {"loss_ce": loss.detach()},
            {"loss_per_sample": per_sample.detach(), "p_true_student": true_class_prob(student_out.detach(), batch.y)},
        )
