"""Label smoothing (Szegedy et al., 2016): q = (1 - eps) e_y + eps / K, eps spread over all K classes.

Same as `nn.CrossEntropyLoss(label_smoothing=eps)` and as WSL's helper in `tools/utils.py`
(METHODS.md section 2.2). It is KD with a uniform teacher at T=1.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from kdlib.data.base import Batch
from kdlib.methods.base import METHODS, Distiller, StepOutput, true_class_prob
from kdlib.schedules import Schedulable
from kdlib.spec import Spec


class Params(Spec):
    name: Literal["label_smoothing"] = "label_smoothing"
    epsilon: Schedulable(ge=0, le=1) = Field(0.1, description="eps: probability mass spread uniformly over all classes")


def label_smoothing_loss(logits: Tensor, labels: Tensor, epsilon: float, reduction: str = "mean") -> Tensor:
    return F.cross_entropy(logits.float(), labels, label_smoothing=epsilon, reduction=reduction)


@METHODS.register("label_smoothing")
class LabelSmoothing(Distiller):
    Params = Params

    def loss(self, batch: Batch, student_out: Tensor, teacher_out: Tensor | None) -> StepOutput:
        per_sample = label_smoothing_loss(student_out, batch.y, self.coefficient("epsilon"), reduction="none")
        loss = per_sample.mean()
        return StepOutput(
            loss,
            {"loss_ls": loss.detach()},
            {"loss_per_sample": per_sample.detach(), "p_true_student": true_class_prob(student_out.detach(), batch.y)},
        )
