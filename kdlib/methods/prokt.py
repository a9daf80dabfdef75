"""ProKT (Shi, Song, Zhou, Li, Li, 2021, "Follow Your Path: a Progressive Method for Knowledge
Distillation", ECML-PKDD 2021 as the official repository's README says).

The teacher keeps training beside the student, and each of its steps is held close to where the
student is now, so the student is always shown a target it can reach (an approximate mirror-descent
step, the teacher projected into the student's space). Per batch, in this order (METHODS.md section 7):

    student view:  z_s~ = student(x) in eval mode, without grad
    teacher step:  L_T = (1 - w) * CE(y, softmax(z_t)) + w * KL(softmax(z_s~) || softmax(z_t))   update theta_t
    refresh:       z_t' = teacher(x) after its step, in eval mode, without grad
    student step:  L_S = w_kd * T^2 * KL(softmax(z_t' / T) || softmax(z_s / T)) + w_ce * CE(y, softmax(z_s))

w is `move_back_weight`, in [0, 1]; the teacher's step is at T = 1. The student's step is the
trainer's (it minimises the returned loss); the teacher's step happens inside `forward` with the
method's own optimizer and learning-rate schedule (`teacher_lr`, which may follow a schedule over
epochs). L_T never reaches the student, L_S never reaches the teacher (tests check both).

Checked against the paper's own code for text classification, `wxsh1213/prokt_text` at 3d9b077
(`examples/text-classification/run_glue_milestone.py`, `src/transformers/modeling_bert.py`,
`src/transformers/trainer.py`): the teacher's criterion is `KDCriterion(soft_label_weight=
move_back_weight)`, `(1 - w) * ce_loss + w * kld_loss`, where `kld_loss` is
`mean(sum(p_soft * (log p_soft - log p_teacher)))` with the student's logits as the soft labels:
KL(student || teacher), at T = 1, and w is the weight of a convex mix, not a multiplier of the KL
(its README runs w = 0.4 for BERT-base -> BERT-6, 0.3 for -> biLSTM). The logits handed from one model
to the other come from `Trainer.output`, which puts the model in eval mode and detaches them; each
model trains in train mode. The student's criterion is `KDCriterion(1.0)`: KL(teacher' || student) at
T = 1 alone, kdlib's defaults w_kd = 1, w_ce = 0, T = 1. `teacher_loss` is that teacher criterion,
checked against the official `kld_loss` transcribed in `tests/methods/test_prokt.py`.

Not carried over: the official teacher and student start from pretrained BERT weights that were not
fine-tuned on the task, with zeroed classifiers (`init_classifier_to_zero`), and clip gradients at norm
1 (the Hugging Face default). kdlib's teacher starts by default from the trained teacher artifact (a
warm start, `teacher_init: artifact`), because the run's `teacher:` section already trains one;
`teacher_init: scratch` restarts it from its initialization (checkpoint 0 of its route when saved,
else every layer's `reset_parameters()`: PyTorch's default init, not necessarily the model's own),
which is nearer the official start. The student view costs one student forward without grad per step.

Recorded: per sample `kl_ts` (KL(teacher || student) at T = 1 before the teacher's step, teacher in
train mode as its loss saw it, student in eval mode), `kl_ts_after` (the refreshed teacher's, both in
eval mode), `p_true_teacher` (of the refreshed teacher, the student's target), `p_true_student`,
`loss_per_sample`; per epoch the teacher's and the student's softmax on a fixed probe set (the first
`probe_size` training samples, eval mode): `probe.teacher_probs`, `probe.student_probs` [P, K], so a
route view can draw the teacher moving toward the student. `ideal_local_target` is the exact
mirror-descent step on the simplex, for the views' "ideal local target".
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError
from torch import Tensor, nn

from kdlib.data.base import Batch, first_samples
from kdlib.methods.base import Distiller, MethodContext, StepOutput, Value, common_values
from kdlib.methods.kd import kd_step, softened_kl
from kdlib.schedules import Schedulable
from kdlib.spec import STORED, Spec


class Params(Spec):
    move_back_weight: Schedulable(ge=0, le=1) = Field(
        0.4,
        description="w: the teacher's loss is (1 - w) CE + w KL(student || teacher); 0 ignores the student, 1 "
        "only follows it (the official --move_back_weight; 0.4 is its README's BERT setting)",
    )
    temperature: Schedulable(gt=0) = Field(
        1.0, description="T: softens the student's soft term (the teacher's step is at T = 1, as officially)"
    )
    w_kd: Schedulable(ge=0) = Field(1.0, description="weight of the student's soft term T^2 KL(teacher' || student)")
    w_ce: Schedulable(ge=0) = Field(0.0, description="weight of the student's cross-entropy on the labels")
    teacher_init: Literal["artifact", "scratch"] = Field(
        "artifact",
        description="artifact: continue from the trained teacher (warm start); scratch: restart it from its "
        "initialization (nearer the official text code, whose teacher starts from weights not trained on the task)",
    )
    teacher_optimizer: Literal["sgd", "adam", "adamw"] = Field("adam", description="the teacher's optimizer")
    teacher_lr: Schedulable(gt=0) = Field(
        1e-3, description="the teacher's learning rate (per epoch; may follow a schedule)"
    )
    teacher_momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum of the teacher's optimizer")
    teacher_weight_decay: float = Field(0.0, ge=0, description="weight decay of the teacher's optimizer")
    teacher_steps_per_step: int = Field(1, ge=1, description="teacher updates on each batch before the student's")
    refresh_targets: bool = Field(
        True,
        description="forward the teacher again after its step (eval mode), as the official code does; false "
        "reuses the pre-step logits of its train-mode step (one teacher forward less per step)",
    )
    probe_size: int = Field(
        500, ge=0, description="first training samples on which teacher and student are recorded each epoch; 0 = off"
    )

    @model_validator(mode="before")
    @classmethod
    def _lambda_was_replaced(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and "lambda_" in data and (info.context or {}).get(STORED):
            # a run stored before the official loss still opens: its lambda as the ratio of the two terms
            old = data["lambda_"]
            data = {k: v for k, v in data.items() if k != "lambda_"}
            if isinstance(old, int | float) and not isinstance(old, bool) and old >= 0:
                data["move_back_weight"] = old / (1 + old)
            return data
        if isinstance(data, dict) and "lambda_" in data:
            raise PydanticCustomError(
                "replaced_field",
                "lambda_ was replaced by move_back_weight: the teacher's loss is now the official "
                "(1 - w) CE + w KL(student || teacher), w in [0, 1], not CE + lambda KL(teacher || student). "
                "Write move_back_weight: 0.4 (the official setting), or lambda / (1 + lambda) for the old "
                "ratio of the two terms (0.5 for lambda_ = 1)",
            )
        return data


def teacher_loss_terms(teacher_logits: Tensor, student_logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """CE(y, softmax(z_t)) and KL(softmax(sg(z_s)) || softmax(z_t)) per sample, T = 1, float32.

    The student's logits are detached here: the teacher's loss must never reach the student.
    """
    ce = F.cross_entropy(teacher_logits.float(), labels, reduction="none")
    kl = softened_kl(teacher_logits, student_logits.detach(), 1.0)
    return ce, kl


def teacher_loss(teacher_logits: Tensor, student_logits: Tensor, labels: Tensor, weight: float) -> Tensor:
    """The teacher's loss, batch mean: (1 - w) CE(y, softmax(z_t)) + w KL(softmax(sg(z_s)) || softmax(z_t)).

    The official `KDCriterion(soft_label_weight=w)` over `modeling_bert`'s `(kld_loss, ce_loss)`
    (`wxsh1213/prokt_text` at 3d9b077). z_t = [2, 0, -1], z_s = [0, 1, 0], y = 0: 0.494938 at w = 0.4.
    """
    ce, kl = teacher_loss_terms(teacher_logits, student_logits, labels)
    return ((1 - weight) * ce + weight * kl).mean()


@torch.no_grad()
def eval_logits(model: nn.Module, x: Tensor) -> Tensor:
    """A model's float32 logits in eval mode (no dropout, BN running statistics), its mode given back."""
    was_training = model.training
    model.eval()
    logits = model(x).float()
    model.train(was_training)
    return logits


def kl_teacher_student(teacher_logits: Tensor, student_logits: Tensor) -> Tensor:
    """KL(softmax(z_t) || softmax(z_s)) per sample at T = 1, detached: the gap the teacher is held to."""
    return softened_kl(student_logits.detach(), teacher_logits.detach(), 1.0)


def ideal_local_target(student_probs: Tensor, labels: Tensor, eta: float) -> Tensor:
    """One exact mirror-descent step on the simplex from p_s for the loss -log q_y:

        q+ = normalize(p_s * exp(eta * e_y / p_{s,y}))

    Only the true class's ratio q+/p_s differs from the others'; eta -> 0 gives p_s back.
    """
    p_true = student_probs.gather(1, labels[:, None]).clamp_min(1e-12)
    step = F.one_hot(labels, student_probs.shape[1]).to(student_probs.dtype) * (eta / p_true)
    # In log space: softmax normalizes and subtracts the row maximum, so a tiny p_{s,y} cannot overflow exp().
    return F.softmax(student_probs.clamp_min(1e-12).log() + step, dim=1)


def make_teacher_optimizer(params: Params, parameters: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    if params.teacher_optimizer == "sgd":
        return torch.optim.SGD(
            parameters, lr=lr, momentum=params.teacher_momentum, weight_decay=params.teacher_weight_decay
        )
    kind = torch.optim.Adam if params.teacher_optimizer == "adam" else torch.optim.AdamW
    return kind(parameters, lr=lr, weight_decay=params.teacher_weight_decay)


def restart_from_scratch(model: nn.Module, context: MethodContext) -> None:
    """Reset a model to an initialization: its route's checkpoint 0 if saved, else PyTorch's default init."""
    if context.route is not None and 0 in context.route.epochs:
        model.load_state_dict(context.route.load(0).state_dict())
        return
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()


class ProKT(Distiller):
    Params = Params
    runs_on_several_processes = False  # its own optimizer steps are not shared across processes
    needs_teacher = True
    per_sample_values = common_values("loss_per_sample", "kl", "p_true_student") | {
        "p_true_teacher": Value("p(true) teacher", "the true class's probability under the teacher after its step: the student's target"),
        "kl_ts": Value("KL(teacher || student) before", "the teacher-student gap before the teacher's step (T = 1; "
                       "the step itself holds KL(student || teacher))"),
        "kl_ts_after": Value("KL(teacher || student) after", "the same gap after the teacher's step (T = 1)"),
    }

    def __init__(self, params: Params, student: nn.Module, teacher: nn.Module | None, context: MethodContext) -> None:
        super().__init__(params, student, teacher, context)
        # The trainer hands over a frozen teacher in eval mode; this method trains it.
        self.teacher.requires_grad_(True)
        if params.teacher_init == "scratch":
            restart_from_scratch(self.teacher, context)
        self.teacher_optimizer = make_teacher_optimizer(
            params, list(self.teacher.parameters()), self.coefficient("teacher_lr")
        )
        self._scaler: torch.amp.GradScaler | None = None
        self.probe_x = None
        if params.probe_size and context.train is not None:
            self.probe_x = first_samples(context.train, params.probe_size).to(context.device)

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch
        self.teacher.train()
        for group in self.teacher_optimizer.param_groups:
            group["lr"] = self.coefficient("teacher_lr")

    def _grad_scaler(self) -> torch.amp.GradScaler:
        # fp16 autocast (CUDA without bf16) needs loss scaling for the teacher's step too; the trainer's
        # scaler only serves the student's optimizer.
        if self._scaler is None:
            device = self.context.device.type
            fp16 = (
                device == "cuda"
                and torch.is_autocast_enabled(device)
                and torch.get_autocast_dtype(device) == torch.float16
            )
            self._scaler = torch.amp.GradScaler(device, enabled=fp16)
        return self._scaler

    def teacher_step(self, batch: Batch, student_view: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The teacher's update(s) on L_T; returns its pre-step logits (detached) and its loss terms."""
        weight, scaler = self.coefficient("move_back_weight"), self._grad_scaler()
        before, terms = None, {}
        for _ in range(self.params.teacher_steps_per_step):
            teacher_logits = self.teacher(batch.x)
            ce, kl = teacher_loss_terms(teacher_logits, student_view, batch.y)
            if before is None:
                before = teacher_logits.detach()
                terms = {"loss_teacher_ce": ce.mean().detach(), "loss_teacher_kl": kl.mean().detach()}
            self.teacher_optimizer.zero_grad(set_to_none=True)
            scaler.scale(((1 - weight) * ce + weight * kl).mean()).backward()
            scaler.step(self.teacher_optimizer)
            scaler.update()
        # Gradients gone, so the student's backward leaves the teacher with `grad is None`.
        self.teacher_optimizer.zero_grad(set_to_none=True)
        return before, terms

    def forward(self, batch: Batch) -> StepOutput:
        # As the official loop: each model is shown the other's eval-mode logits, and the student's
        # train-mode forward comes last, so its BN running statistics move once, after the view.
        student_view = eval_logits(self.student, batch.x)
        before, teacher_terms = self.teacher_step(batch, student_view)
        target_logits = eval_logits(self.teacher, batch.x) if self.params.refresh_targets else before.float()
        student_logits = self.student(batch.x)
        out = kd_step(student_logits, target_logits, batch.y, self.coefficient("temperature"),
                      self.coefficient("w_ce"), self.coefficient("w_kd"))
        out.logits = student_logits
        kl_before = kl_teacher_student(before, student_view)
        out.terms |= teacher_terms | {"kl_ts": kl_before.mean()}
        out.per_sample |= {"kl_ts": kl_before, "kl_ts_after": kl_teacher_student(target_logits, student_view)}
        return out

    @torch.no_grad()
    def epoch_arrays(self) -> dict[str, np.ndarray]:
        if self.probe_x is None:
            return {}
        return {key: F.softmax(eval_logits(model, self.probe_x), dim=1).cpu().numpy()
                for key, model in (("probe.teacher_probs", self.teacher), ("probe.student_probs", self.student))}

    def state_dict(self) -> dict:
        # Weights, BN buffers and the optimizer's moments: tensors, ints, floats and lists only, so the
        # checkpoint still loads with torch.load(weights_only=True).
        return {"teacher": self.teacher.state_dict(), "teacher_optimizer": self.teacher_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.teacher.load_state_dict(state["teacher"])
        self.teacher_optimizer.load_state_dict(state["teacher_optimizer"])
