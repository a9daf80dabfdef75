"""ProKT (Shi, Song, Zhou, Li, Li, 2021, "Follow Your Path: a Progressive Method for Knowledge
Distillation"; the venue, ECML-PKDD 2021, is recalled, not checked).

The teacher keeps training beside the student, and each of its steps is held close to where the
student is now, so the student is always shown a target it can reach (an approximate mirror-descent
step, the teacher projected into the student's space). Per batch, in this order (METHODS.md section 7):

    teacher step:  L_T = CE(y, softmax(z_t)) + lambda * KL(softmax(z_t / T) || softmax(sg(z_s) / T))   update theta_t
    refresh:       z_t' = teacher(x) after its step, without grad
    student step:  L_S = w_kd * T^2 * KL(softmax(sg(z_t') / T) || softmax(z_s / T)) + w_ce * CE(y, softmax(z_s))

The student's step is the trainer's (it minimises the returned loss); the teacher's step happens
inside `forward` with the method's own optimizer and learning-rate schedule (`teacher_lr`, which may
follow a schedule over epochs). The detaches make this two alternating problems, not one joint
objective: L_T never reaches the student, L_S never reaches the teacher (tests check both).

Reconstruction, not a port: no official code was found, and the exact form of L_T, the KL direction
and lambda are [P] in METHODS.md. Defaults are METHODS.md's [D] ones (lambda = 1, T = 1, w_kd = 1,
w_ce = 0), with one difference: by default the teacher starts from the trained teacher artifact (a
warm start, `teacher_init: artifact`), because the run's `teacher:` section already trains one;
`teacher_init: scratch` restarts it from its initialization (checkpoint 0 of its route when saved,
else every layer's `reset_parameters()`: PyTorch's default init, not necessarily the model's own).
The paper's choice of initialization was not verified. The teacher runs in training mode (batch
statistics; its second forward on the same batch updates the BN running statistics a second time).

Recorded: per sample `kl_ts` (KL(teacher || student) at T = 1 before the teacher step), `kl_ts_after`
(after it), `p_true_teacher` (of the refreshed teacher, the student's target), `p_true_student`,
`loss_per_sample`; per epoch the teacher's and the student's softmax on a fixed probe set (the first
`probe_size` training samples, eval mode): `probe.teacher_probs`, `probe.student_probs` [P, K], so a
route view can draw the teacher moving toward the student. `ideal_local_target` is the exact
mirror-descent step on the simplex, for the views' "ideal local target".
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from kdlib.data.base import Batch, first_samples
from kdlib.methods.base import Distiller, MethodContext, StepOutput, Value, common_values
from kdlib.methods.kd import kd_step, softened_kl
from kdlib.schedules import Schedulable
from kdlib.spec import Spec


class Params(Spec):
    lambda_: Schedulable(ge=0) = Field(
        1.0, description="lambda: weight of KL(teacher || student) in the teacher's loss; large keeps the teacher near"
    )
    temperature: Schedulable(gt=0) = Field(1.0, description="T: softens both distributions in both KL terms")
    w_kd: Schedulable(ge=0) = Field(1.0, description="weight of the student's soft term T^2 KL(teacher' || student)")
    w_ce: Schedulable(ge=0) = Field(0.0, description="weight of the student's cross-entropy on the labels")
    teacher_init: Literal["artifact", "scratch"] = Field(
        "artifact",
        description="artifact: continue from the trained teacher (warm start); scratch: restart it from its "
        "initialization (the paper's choice was not verified)",
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
        description="forward the teacher again after its step, as the procedure says; false reuses the "
        "pre-step logits (one teacher forward less per step)",
    )
    probe_size: int = Field(
        500, ge=0, description="first training samples on which teacher and student are recorded each epoch; 0 = off"
    )


def teacher_loss_per_sample(
    teacher_logits: Tensor, student_logits: Tensor, labels: Tensor, temperature: float
) -> tuple[Tensor, Tensor]:
    """CE(y, softmax(z_t)) and KL(softmax(z_t/T) || softmax(sg(z_s)/T)) per sample (no T^2), float32.

    The student's logits are detached here: the teacher's loss must never reach the student.
    """
    ce = F.cross_entropy(teacher_logits.float(), labels, reduction="none")
    kl = softened_kl(student_logits.detach(), teacher_logits, temperature)
    return ce, kl


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
        "kl_ts": Value("KL(teacher || student) before", "the gap the teacher is held to, before its step (T = 1)"),
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

    def teacher_step(self, batch: Batch, student_logits: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The teacher's update(s) on L_T; returns its pre-step logits (detached) and its loss terms."""
        temperature, lam, scaler = self.coefficient("temperature"), self.coefficient("lambda_"), self._grad_scaler()
        before, terms = None, {}
        for _ in range(self.params.teacher_steps_per_step):
            teacher_logits = self.teacher(batch.x)
            ce, kl = teacher_loss_per_sample(teacher_logits, student_logits, batch.y, temperature)
            if before is None:
                before = teacher_logits.detach()
                terms = {"loss_teacher_ce": ce.mean().detach(), "loss_teacher_kl": kl.mean().detach()}
            self.teacher_optimizer.zero_grad(set_to_none=True)
            scaler.scale((ce + lam * kl).mean()).backward()
            scaler.step(self.teacher_optimizer)
            scaler.update()
        # Gradients gone, so the student's backward leaves the teacher with `grad is None`.
        self.teacher_optimizer.zero_grad(set_to_none=True)
        return before, terms

    def forward(self, batch: Batch) -> StepOutput:
        student_logits = self.student(batch.x)
        before, teacher_terms = self.teacher_step(batch, student_logits.detach())
        if self.params.refresh_targets:
            with torch.no_grad():
                target_logits = self.teacher(batch.x).float()
        else:
            target_logits = before.float()
        out = kd_step(student_logits, target_logits, batch.y, self.coefficient("temperature"),
                      self.coefficient("w_ce"), self.coefficient("w_kd"))
        out.logits = student_logits
        kl_before = kl_teacher_student(before, student_logits)
        out.terms |= teacher_terms | {"kl_ts": kl_before.mean()}
        out.per_sample |= {"kl_ts": kl_before, "kl_ts_after": kl_teacher_student(target_logits, student_logits)}
        return out

    @torch.no_grad()
    def epoch_arrays(self) -> dict[str, np.ndarray]:
        if self.probe_x is None:
            return {}
        arrays = {}
        for key, model in (("probe.teacher_probs", self.teacher), ("probe.student_probs", self.student)):
            was_training = model.training
            model.eval()
            arrays[key] = F.softmax(model(self.probe_x).float(), dim=1).cpu().numpy()
            model.train(was_training)
        return arrays

    def state_dict(self) -> dict:
        # Weights, BN buffers and the optimizer's moments: tensors, ints, floats and lists only, so the
        # checkpoint still loads with torch.load(weights_only=True).
        return {"teacher": self.teacher.state_dict(), "teacher_optimizer": self.teacher_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.teacher.load_state_dict(state["teacher"])
        self.teacher_optimizer.load_state_dict(state["teacher_optimizer"])
