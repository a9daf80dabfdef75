"""My own data, model and method for kdlib: scikit-learn's breast cancer set, a net with one hidden
layer, and KD whose soft term counts where the teacher is right (confidence-weighted KD).

    w_i = p_teacher(y_i)^gamma                                            (detached)
    L   = w_ce CE(y, s) + w_kd T^2 (1/N) sum_i w_i KL(softmax(t_i/T) || softmax(s_i/T))

gamma = 0 is Hinton KD; a larger gamma listens less to the teacher on the samples it gets wrong.
Name this file in a config's `imports:` (see mine.yaml) and every kdlib process knows all three.
"""

import numpy as np
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

import kdlib
from kdlib.methods import Distiller, StepOutput, Value
from kdlib.spec import Spec


@kdlib.register_model("tinynet")
def tinynet(input_shape, num_classes, hidden: int = 16) -> nn.Module:
    """One hidden layer."""
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))

@kdlib.register_dataset("breast_cancer")
def breast_cancer(standardize: bool = True):
    """scikit-learn's breast cancer set."""
    from sklearn.datasets import load_breast_cancer
    x, y = load_breast_cancer(return_X_y=True)
    if standardize:
        x = (x - x.mean(0)) / x.std(0)
    return x.astype("float32"), y


class ConfidentKDParams(Spec):
    temperature: float = Field(4.0, gt=0, description="T: softens teacher and student alike")
    w_ce: float = Field(0.5, ge=0, description="weight of cross-entropy on the labels")
    w_kd: float = Field(0.5, ge=0, description="weight of the confidence-weighted soft term")
    gamma: float = Field(1.0, ge=0, description="the weight is p_teacher(true class)^gamma; 0 is Hinton KD")


def confident_kd_terms(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float,
                       gamma: float) -> tuple[Tensor, Tensor]:
    """Per sample: the soft term's weight p_teacher(y)^gamma, and T^2 KL(teacher || student) at temperature T."""
    p_teacher_true = F.softmax(teacher_logits.float(), dim=1).gather(1, labels[:, None]).squeeze(1)
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="none", log_target=True).sum(1)
    return p_teacher_true.detach() ** gamma, kl * temperature**2


@kdlib.register_method("confident_kd")
class ConfidentKD(Distiller):
    Params = ConfidentKDParams
    needs_teacher = True
    per_sample_values = {
        "weight": Value("soft-term weight", "p_teacher(true class)^gamma: how much the teacher counts for the sample"),
        "loss_per_sample": Value("loss", "the sample's loss under the method"),
    }

    def loss(self, batch, student_logits: Tensor, teacher_logits: Tensor | None) -> StepOutput:
        p = self.params
        weight, soft = confident_kd_terms(student_logits, teacher_logits.detach(), batch.y, p.temperature, p.gamma)
        ce = F.cross_entropy(student_logits.float(), batch.y, reduction="none")
        per_sample = p.w_ce * ce + p.w_kd * weight * soft
        terms = {"loss_ce": ce.mean().detach(), "loss_soft": (weight * soft).mean().detach()}
        return StepOutput(per_sample.mean(), terms, {"weight": weight, "loss_per_sample": per_sample.detach()})
