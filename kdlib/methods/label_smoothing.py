"""Label smoothing (Szegedy et al., 2016): q = (1 - eps) e_y + eps / K, eps spread over all K classes.

Same as `nn.CrossEntropyLoss(label_smoothing=eps)` and as WSL's helper in `tools/utils.py`
(METHODS.md section 2.2). It is KD with a uniform teacher at T=1.
"""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from kdlib.data.base import Batch
from kdlib.methods.base import Distiller, StepOutput, common_values, true_class_prob
from kdlib.schedules import Schedulable
from kdlib.spec import Spec


class Params(Spec):
    epsilon: Schedulable(ge=0, le=1) = Field(0.1, description="eps: probability mass spread uniformly over all classes")


def label_smoothing_loss(logits: Tensor, labels: Tensor, epsilon: float, reduction: str = "mean") -> Tensor:
    return F.cross_entropy(logits.float(), labels, label_smoothing=epsilon, reduction=reduction)


class LabelSmoothing(Distiller):
    Params = Params
    per_sample_values = common_values("loss_per_sample", "p_true_student")

    def loss(self, batch: Batch, student_logits: Tensor, teacher_logits: Tensor | None) -> StepOutput:
        per_sample = label_smoothing_loss(student_logits, batch.y, self.coefficient("epsilon"), reduction="none")
        loss = per_sample.mean()
        p_true = true_class_prob(student_logits.detach(), batch.y)
        return StepOutput(loss, {"loss_ls": loss.detach()}, {"loss_per_sample": per_sample.detach(), "p_true_student": p_true})
