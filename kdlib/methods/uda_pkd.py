"""Progressive KD with unsupervised domain adaptation (Nguyen-Meidine, Granger, Kiran, Dolz,
Blais-Morin, IJCNN 2020, "Joint Progressive Knowledge Distillation and Unsupervised Domain Adaptation").

A labelled source domain, an unlabelled target domain. Every step takes a source batch (x_s, y_s)
and a target batch x_t (drawn here from `context.target_train`, whose labels are all -1), and makes
two updates (METHODS.md section 10), i = 1..B the step in the epoch, e = 1..E the epoch:

    step A (teacher, own optimizer):
        L_DA = (1 - beta_e) [ CE(y_s, softmax(f_T(x_s))) + gamma_i MMD^2(h_T(x_s), h_T(x_t)) ]
        gamma_i = 2 / (1 + exp(-10 i / B)) - 1                       (restarts every epoch)
    step B (the run's optimizer):
        L_KD = beta_e ( alpha T^2 KL(p_S^T(x_s) || p_T^T(x_s)) + (1 - alpha) CE(y_s, softmax(f_S(x_s)))
                        + T^2 KL(p_S^T(x_t) || p_T^T(x_t)) )
        beta_e = beta_0 exp(r (e - 1)),  r = ln(beta_1 / beta_0) / E

KL is summed over classes and averaged over the batch. h_T is the teacher's "embedding" feature tap
(the classifier's input). MMD^2 is the biased estimate over all pairs with a sum of 5 Gaussian
kernels exp(-||u - v||^2 / b_j), b_j = b 2^(j-2), b = the mean squared distance between the 2B
stacked features (detached, diagonal excluded).

Checked against LIVIAETS/KD_UDA `kd_da_alt.py` (both steps, beta, gamma, the DA learning rate
lr0 / (1 + 10 (e - 1) / (E + 1))^0.75, T = 20, alpha = 0.3, SGD 0.001 / 0.9 / 5e-4), `KD/base_kd.py`
(`kl_div(log_softmax(z_t / T), softmax(z_s / T), sum) T^2 / N`: the KL of the student to the teacher,
"reverse" KL) and `cmodels/DAN_model.py` (pooled features, separate source and target passes), and
the MMD in lpy520/KD_UDA `DA/mmd.py` (`mmd_rbf_noaccelerate`). As there, the KD step's loss also
reaches the teacher (it is not detached): the teacher's parameters are handed to the run's
optimizer through `extra_parameters`, so the teacher has two optimizers as in the official code.

Deviations, each on purpose:
- The official optimizers both hold teacher and student; with zero-filled gradients, momentum and
  weight decay then move the "other" model at each step. Here step A's optimizer holds the
  teacher only, and step B's holds the student and the teacher.
- Step B moves the teacher with the run's optimizer (its lr, momentum, weight decay); the official
  code gives both optimizers lr 0.001. `teacher_kd_grad_scale` scales the KD gradient that reaches
  the teacher, so that under SGD the teacher can keep a smaller rate than a fast student (1: official).
- `.abs()` around both KD terms is dropped: each is non-negative, and the abs would hide a sign error.
- The teacher is trained in train mode in both steps. In the published loop (commit a360af7) the
  per-epoch `utils.eval` puts both models in eval mode and nothing puts them back, and in eval mode
  `DANNet_ResNet.forward` returns the target *input* instead of its logits and an MMD of 0: after
  epoch 1 the target KD term and the MMD are 0. We implement the method as written instead.
- The teacher comes from kdlib's teacher section (trained on the source with cross-entropy) before
  adaptation starts; the paper starts it from ImageNet weights. Use few teacher epochs to be close.
- `teacher_frozen_in_kd: true` (our switch): the KD step reads the teacher in eval mode without
  gradient and uses the forward KL(p_T^T || p_S^T) of Hinton KD; the teacher is then moved by step A only.
- Without a target split (a plain dataset) the source's own training inputs, labels masked, stand in
  for the target, with a warning: the method then runs, but adapts to nothing.

Per sample (source rows): p_true_student, p_true_teacher, kl (the KD's KL at T on the source
sample, without T^2), loss_per_sample (beta_e times the source part). Per epoch (`epoch_arrays`), on
the first `target_probe_size` samples of target_train: target.confidence_student/_teacher,
target.pred_student/_teacher, target.kl (the KD's KL at T). Scalars: beta, gamma (the last step's),
mmd2 (the epoch's mean MMD^2), teacher_lr.
"""

from __future__ import annotations

import math
import warnings
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from kdlib.data.base import Batch, Split, first_samples
from kdlib.data.domain_pair import masked
from kdlib.methods.base import Distiller, MethodContext, StepOutput, common_values, true_class_prob
from kdlib.models import FeatureTaps
from kdlib.spec import Spec


class Params(Spec):
    needs_target_domain: ClassVar[bool] = True  # refused at validation on data without one (kdlib.validation)

    temperature: float = Field(20.0, gt=0, description="T of both KD terms (official code: 20)")
    alpha: float = Field(
        0.3, ge=0, le=1, description="alpha: source KD term = alpha T^2 KL + (1 - alpha) CE (official code: 0.3)"
    )
    beta_start: float = Field(0.1, gt=0, le=1, description="beta_0: KD weight at the first epoch (1 - beta_0: DA's)")
    beta_end: float = Field(
        0.9, gt=0, le=1, description="beta_1: beta_e = beta_0 (beta_1 / beta_0)^((e - 1) / E) for epochs e = 1..E"
    )
    teacher_frozen_in_kd: bool = Field(
        False,
        description="the KD step reads the teacher without gradient (eval mode) with the forward KL(teacher || "
        "student); false: the official form, reverse KL with the KD loss also training the teacher",
    )
    teacher_kd_grad_scale: float = Field(
        1.0,
        ge=0,
        description="multiplies the KD loss's gradient into the teacher (official form only). The KD step moves "
        "the teacher with the run's optimizer: under SGD its rate there is this times the run's lr (the official "
        "code: 1, both rates 0.001)",
    )
    feature_tap: str = Field("embedding", description="the teacher's feature tap whose outputs are aligned by MMD")
    num_kernels: int = Field(5, ge=1, description="Gaussian kernels of the MMD")
    kernel_mul: float = Field(2.0, gt=1, description="ratio between neighbouring kernel bandwidths")
    teacher_optimizer: Literal["sgd", "adam"] = Field("sgd", description="the optimizer of the teacher's DA step")
    teacher_lr: float = Field(0.001, gt=0, description="learning rate of the DA step (official: 0.001)")
    teacher_momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum of the DA step")
    teacher_weight_decay: float = Field(5e-4, ge=0, description="weight decay of the DA step")
    teacher_lr_decay: bool = Field(
        True, description="anneal the DA learning rate per epoch: lr0 / (1 + 10 (e - 1) / (E + 1))^0.75 (official)"
    )
    target_probe_size: int = Field(
        1000, ge=0, description="target training samples on which confidence and KL are recorded each epoch"
    )

    def feature_problems(self, student_taps: list[str] | None, teacher_taps: list[str] | None) -> list[str]:
        """The feature tap must be the teacher's (the models' taps, known before anything trains)."""
        if teacher_taps is None or self.feature_tap in teacher_taps:
            return []
        return [f"method.feature_tap: {self.feature_tap!r} is not a feature tap of the teacher; it has "
                f"{', '.join(teacher_taps)}"]


def progressive_beta(epoch: int, total_epochs: int, beta_start: float, beta_end: float) -> float:
    """beta_e = beta_0 exp(r (e - 1)), r = ln(beta_1 / beta_0) / E, for the 1-based epoch e."""
    rate = math.log(beta_end / beta_start) / total_epochs
    return beta_start * math.exp(rate * (epoch - 1))


def mmd_gamma(step: int, steps_per_epoch: int) -> float:
    """gamma_i = 2 / (1 + exp(-10 i / B)) - 1 for the 1-based step i of an epoch of B steps."""
    return 2 / (1 + math.exp(-10 * step / steps_per_epoch)) - 1


def da_learning_rate(lr0: float, epoch: int, total_epochs: int) -> float:
    """The official DA step's rate at the 1-based epoch e: lr0 / (1 + 10 (e - 1) / (E + 1))^0.75."""
    return lr0 / (1 + 10 * (epoch - 1) / (total_epochs + 1)) ** 0.75


def gaussian_kernels(source: Tensor, target: Tensor, num_kernels: int = 5, kernel_mul: float = 2.0) -> Tensor:
    """sum_j exp(-||u - v||^2 / b_j) over every pair of the stacked rows [source; target].

    b_j = b kernel_mul^(j - num_kernels // 2), b = sum of squared distances / (n^2 - n), detached.
    """
    total = torch.cat([source, target]).flatten(1)
    n = total.shape[0]
    distances = torch.cdist(total, total).square()
    bandwidth = distances.detach().sum() / (n * n - n)
    bandwidths = [bandwidth * kernel_mul ** (j - num_kernels // 2) for j in range(num_kernels)]
    return sum(torch.exp(-distances / b) for b in bandwidths)


def mmd2(source: Tensor, target: Tensor, num_kernels: int = 5, kernel_mul: float = 2.0) -> Tensor:
    """Biased MMD^2 = mean K_ss + mean K_tt - 2 mean K_st (the official mean(XX + YY - XY - YX) for equal sizes)."""
    kernels = gaussian_kernels(source.float(), target.float(), num_kernels, kernel_mul)
    n = source.shape[0]
    return kernels[:n, :n].mean() + kernels[n:, n:].mean() - 2 * kernels[:n, n:].mean()


def kl_per_sample(p_logits: Tensor, q_logits: Tensor, temperature: float) -> Tensor:
    """KL(softmax(p / T) || softmax(q / T)) per sample, summed over classes, in float32 (no T^2)."""
    log_p = F.log_softmax(p_logits.float() / temperature, dim=1)
    log_q = F.log_softmax(q_logits.float() / temperature, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(1)


def reverse_kl_per_sample(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """KL(p_S^T || p_T^T): the official `kl_div(log_softmax(z_t / T), softmax(z_s / T))`, per sample."""
    return kl_per_sample(student_logits, teacher_logits, temperature)


class TargetStream:
    """Target batches of the source batch's size, reshuffled whenever the target split runs out."""

    def __init__(self, split: Split) -> None:
        self.split, self.generator = split, torch.Generator()
        self._batches, self._size = iter(()), 0

    def restart(self, seed: int) -> None:
        self.generator.manual_seed(seed)
        self._batches = iter(())

    def next(self, size: int) -> Batch:
        self._size = self._size or min(size, len(self.split))
        batch = next(self._batches, None)
        if batch is None:  # drop_last: every target batch is full, as the source batches are
            self._batches = self.split.batches(self._size, shuffle=True, generator=self.generator, drop_last=True)
            batch = next(self._batches)
        return batch if len(batch) <= size else Batch(batch.x[:size], batch.y[:size], batch.index[:size])


class UDAPKD(Distiller):
    Params = Params
    runs_on_several_processes = False  # its own optimizer steps are not shared across processes
    needs_teacher = True
    per_sample_values = common_values("p_true_student", "p_true_teacher", "kl", "loss_per_sample")

    def __init__(self, params: Params, student: nn.Module, teacher: nn.Module | None, context: MethodContext) -> None:
        super().__init__(params, student, teacher, context)
        self.teacher.requires_grad_(True)  # the trainer hands over a frozen teacher; this method trains it
        teacher_params = list(self.teacher.parameters())
        if params.teacher_optimizer == "sgd":
            self.teacher_optimizer = torch.optim.SGD(
                teacher_params,
                lr=params.teacher_lr,
                momentum=params.teacher_momentum,
                weight_decay=params.teacher_weight_decay,
            )
        else:
            self.teacher_optimizer = torch.optim.Adam(
                teacher_params, lr=params.teacher_lr, weight_decay=params.teacher_weight_decay
            )
        self.target = self._target_split(context)
        self.stream = TargetStream(self.target)
        self.scaler: torch.amp.GradScaler | None = None
        self.steps_per_epoch: int | None = None
        self.step_in_epoch, self.gamma = 0, 0.0
        self._mmd_sum = torch.zeros((), device=context.device)

    @staticmethod
    def _target_split(context: MethodContext) -> Split:
        target = getattr(context, "target_train", None)
        if target is not None:
            return target
        if context.train is None:
            raise ValueError("uda_pkd needs a target domain: use data: {name: domain_pair, ...}")
        warnings.warn(
            "uda_pkd: the data has no target domain (use data: {name: domain_pair, ...}); the source's training "
            "inputs stand in for it, so nothing is adapted",
            stacklevel=3,
        )
        return masked(context.train)

    def beta(self) -> float:
        p = self.params
        return progressive_beta(self.epoch + 1, self.context.total_epochs, p.beta_start, p.beta_end)

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch
        self.teacher.train()  # trained in both steps, as in the official loop
        self.step_in_epoch, self.gamma = 0, 0.0
        self._mmd_sum = torch.zeros((), device=self.context.device)
        if self.params.teacher_lr_decay:
            lr = da_learning_rate(self.params.teacher_lr, epoch + 1, self.context.total_epochs)
            for group in self.teacher_optimizer.param_groups:
                group["lr"] = lr
        # The trainer seeds torch with (seed, epoch) just before: a resumed epoch draws the same target batches.
        self.stream.restart(torch.initial_seed())

    def coefficients(self) -> dict[str, float]:
        return {
            "beta": self.beta(),
            "gamma": self.gamma,
            "mmd2": self._mmd_sum.item() / max(self.step_in_epoch, 1),
            "teacher_lr": self.teacher_optimizer.param_groups[0]["lr"],
        }

    def forward(self, batch: Batch) -> StepOutput:
        x_target = self.stream.next(len(batch)).x.to(batch.x.device, non_blocking=True)
        if self.steps_per_epoch is None:
            self.steps_per_epoch = math.ceil(self.context.train_size / len(batch))
        self.step_in_epoch += 1
        self.gamma = mmd_gamma(self.step_in_epoch, self.steps_per_epoch)
        beta = self.beta()
        da_terms = self.adapt_teacher(batch, x_target, beta, self.gamma)
        return self.distill(batch, x_target, beta, da_terms)

    def adapt_teacher(self, batch: Batch, x_target: Tensor, beta: float, gamma: float) -> dict[str, Tensor]:
        """Step A: one update of the teacher on source CE + gamma MMD^2, weighted by 1 - beta."""
        if self.scaler is None:  # fp16 autocast needs its own scaler for this backward; bf16 and fp32 do not
            device = self.context.device.type
            fp16 = torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.float16
            self.scaler = torch.amp.GradScaler(device, enabled=fp16)
        self.teacher_optimizer.zero_grad(set_to_none=True)
        with FeatureTaps(self.teacher, self.params.feature_tap) as taps:
            source_logits = self.teacher(batch.x)
            source_features = taps.features[self.params.feature_tap]
            self.teacher(x_target)  # separate passes: each domain's batch statistics, as the official model
            target_features = taps.features[self.params.feature_tap]
        ce = F.cross_entropy(source_logits.float(), batch.y)
        mmd = mmd2(source_features, target_features, self.params.num_kernels, self.params.kernel_mul)
        loss = (1 - beta) * (ce + gamma * mmd)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.teacher_optimizer)
        self.scaler.update()
        self.teacher_optimizer.zero_grad(set_to_none=True)
        self._mmd_sum += mmd.detach()
        return {"loss_da": loss.detach(), "loss_ce_teacher": ce.detach(), "mmd2": mmd.detach()}

    def distill(self, batch: Batch, x_target: Tensor, beta: float, da_terms: dict[str, Tensor]) -> StepOutput:
        """Step B: the student learns from the (just updated) teacher on both domains, weighted by beta."""
        p, temperature = self.params, self.params.temperature
        student_source = self.student(batch.x)
        student_target = self.student(x_target)
        if p.teacher_frozen_in_kd:
            self.teacher.eval()
            with torch.no_grad():
                teacher_source, teacher_target = self.teacher(batch.x), self.teacher(x_target)
            self.teacher.train()
            kl_source = kl_per_sample(teacher_source, student_source, temperature)
            kl_target = kl_per_sample(teacher_target, student_target, temperature)
        else:
            teacher_source, teacher_target = self.teacher(batch.x), self.teacher(x_target)
            if p.teacher_kd_grad_scale != 1 and teacher_source.requires_grad:
                for logits in (teacher_source, teacher_target):
                    logits.register_hook(lambda grad: grad * p.teacher_kd_grad_scale)
            kl_source = reverse_kl_per_sample(student_source, teacher_source, temperature)
            kl_target = reverse_kl_per_sample(student_target, teacher_target, temperature)
        ce = F.cross_entropy(student_source.float(), batch.y, reduction="none")
        source_term = p.alpha * temperature**2 * kl_source + (1 - p.alpha) * ce
        target_term = temperature**2 * kl_target.mean()
        loss = beta * (source_term.mean() + target_term)
        terms = {
            **da_terms,
            "loss_kd_source": source_term.mean().detach(),
            "loss_kd_target": target_term.detach(),
            "loss_ce": ce.mean().detach(),
        }
        per_sample = {
            "p_true_student": true_class_prob(student_source.detach(), batch.y),
            "p_true_teacher": true_class_prob(teacher_source.detach(), batch.y),
            "kl": kl_source.detach(),
            "loss_per_sample": (beta * source_term).detach(),
        }
        return StepOutput(loss, terms, per_sample, logits=student_source)

    def extra_parameters(self) -> list[nn.Parameter]:
        # Official form: the KD loss also trains the teacher, with the run's optimizer (optimizer_kd).
        return [] if self.params.teacher_frozen_in_kd else list(self.teacher.parameters())

    @torch.no_grad()
    def epoch_arrays(self) -> dict[str, np.ndarray]:
        """Confidence, prediction and KL of both models on a fixed set of target training samples."""
        if not self.params.target_probe_size:
            return {}
        x = first_samples(self.target, self.params.target_probe_size)
        modes = self.student.training, self.teacher.training
        self.student.eval()
        self.teacher.eval()
        student_logits, teacher_logits = [], []
        for chunk in x.split(256):
            chunk = chunk.to(self.context.device)
            student_logits.append(self.student(chunk).float())
            teacher_logits.append(self.teacher(chunk).float())
        self.student.train(modes[0])
        self.teacher.train(modes[1])
        s, t = torch.cat(student_logits), torch.cat(teacher_logits)
        if self.params.teacher_frozen_in_kd:
            kl = kl_per_sample(t, s, self.params.temperature)
        else:
            kl = reverse_kl_per_sample(s, t, self.params.temperature)
        confidence_s, pred_s = F.softmax(s, dim=1).max(1)
        confidence_t, pred_t = F.softmax(t, dim=1).max(1)
        values = {
            "confidence_student": confidence_s,
            "confidence_teacher": confidence_t,
            "pred_student": pred_s.float(),
            "pred_teacher": pred_t.float(),
            "kl": kl,
        }
        return {f"target.{k}": v.cpu().numpy() for k, v in values.items()}

    def state_dict(self) -> dict:
        # The teacher moves during the run, so a resumed run needs its weights and its optimizer.
        return {
            "teacher": self.teacher.state_dict(),
            "teacher_optimizer": self.teacher_optimizer.state_dict(),
            "steps_per_epoch": torch.tensor(self.steps_per_epoch or 0),
        }

    def load_state_dict(self, state: dict) -> None:
        self.teacher.load_state_dict(state["teacher"])
        self.teacher_optimizer.load_state_dict(state["teacher_optimizer"])
        self.steps_per_epoch = int(state["steps_per_epoch"]) or None
