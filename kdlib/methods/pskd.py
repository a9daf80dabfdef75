"""PS-KD: progressive self-knowledge distillation (Kim, Ji, Yoon, Hwang, ICCV 2021,
"Self-Knowledge Distillation with Progressive Refinement of Targets").

The model is its own teacher: the target of sample i at epoch e blends its label with the softmax
the model gave it during epoch e - 1 (METHODS.md section 4):

    q_i   = (1 - alpha_t) e_y + alpha_t p~_i        p~_i = sg(softmax(z_i) stored during epoch e - 1)
    L     = (1/N) sum_i CE(q_i, softmax(z_i))
    alpha_t = alpha_T (e + 1) / E                    0-based epoch e, E epochs

Its gradient is p - q, i.e. the plain-CE gradient p - e_y rescaled per sample: on the true class by
w_gt = 1 - alpha_t (1 - p~_g) / (1 - p_g), and the non-true classes' gradient sums to minus the
true class's, so their sum is rescaled by the same w_gt.

Checked against lgcnsai/PS-KD-Pytorch: `loss/pskd_loss.py` (`(-q * log_softmax(z)).mean(0).sum()`,
i.e. sum over classes, mean over batch) and `main.py` (alpha_t = alpha_T (epoch + 1) / end_epoch;
buffer `all_predictions` [N_train, K] set one-hot at epoch 0 and overwritten with the batch's
detached softmax after each step; the buffer is saved with the checkpoint). Differences: the
buffer lives on the training device rather than the CPU, unseen rows are read as one-hot via a
`seen` mask (so any sample's first target is its label), and the target is formed as
e_y + alpha_t (p~ - e_y) so that a one-hot p~ gives e_y bit-exactly (epoch 0 is exactly CE).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from kdlib.data.base import Batch
from kdlib.methods.base import Distiller, MethodContext, StepOutput, Value, common_values
from kdlib.spec import Spec

# Below this plain-CE gradient (1 - p_g, or the norm of p off the true class) a rescaling ratio says
# nothing useful, and its size would overflow the store's float16; the denominator is clamped here,
# which keeps |ratio| <= 1e4.
MIN_CE_GRADIENT = 1e-4


class Params(Spec):
    alpha_T: float = Field(  # noqa: N815  (the paper's symbol)
        0.8, ge=0, le=1, description="alpha_T: the weight of the past prediction in the target at the last epoch"
    )
    buffer_dtype: Literal["float32", "float16"] = Field(
        "float32",
        description="dtype of the stored predictions [train size x classes]; float16 halves the memory (ImageNet)",
    )


def pskd_alpha(epoch: int, total_epochs: int, alpha_T: float) -> float:  # noqa: N803
    """alpha_t = alpha_T (e + 1) / E for the 0-based epoch e, as in the official `main.py`."""
    return alpha_T * (epoch + 1) / total_epochs


def _real(x: Tensor) -> Tensor:
    """float32 at least: low-precision (autocast) values go up, float64 stays for gradient checks."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def pskd_targets(labels: Tensor, prev_probs: Tensor, alpha_t: float) -> Tensor:
    """q = (1 - alpha_t) e_y + alpha_t p~, written e_y + alpha_t (p~ - e_y) so a one-hot p~ gives e_y exactly."""
    prev_probs = _real(prev_probs)
    one_hot = F.one_hot(labels, prev_probs.shape[1]).to(prev_probs.dtype)
    return one_hot + alpha_t * (prev_probs - one_hot)


def pskd_loss_per_sample(logits: Tensor, targets: Tensor) -> Tensor:
    """CE(q_i, softmax(z_i)) = -sum_k q_ik log p_ik, one value per sample."""
    return -(targets * F.log_softmax(_real(logits), dim=1)).sum(1)


def pskd_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Batch mean of the soft-target cross-entropy (the official `.mean(0).sum()`; not a mean over classes)."""
    return pskd_loss_per_sample(logits, targets).mean()


def pskd_logit_gradient(logits: Tensor, targets: Tensor) -> Tensor:
    """d CE(q_i, softmax(z_i)) / d z_i = p_i - q_i in closed form (per sample, before the batch's 1/N)."""
    return F.softmax(_real(logits), dim=1) - targets


def pskd_rescaling(p_true: Tensor, prev_p_true: Tensor, alpha_t: float) -> Tensor:
    """w_gt = 1 - alpha_t (1 - p~_g) / (1 - p_g): the true-class gradient as a share of plain CE's.

    The non-true classes' gradients sum to minus the true class's, so w_gt also rescales their sum.
    Negative when p_g > q_g: the model is more confident than its target and is pushed down.
    """
    return 1 - alpha_t * (1 - prev_p_true) / (1 - p_true).clamp_min(MIN_CE_GRADIENT)


def pskd_other_rescaling(logits: Tensor, targets: Tensor, labels: Tensor) -> Tensor:
    """||(p - q)_{k != g}|| / ||(p - e_y)_{k != g}||: how much of plain CE's push off the true class is left."""
    probs = F.softmax(_real(logits), dim=1)
    off_true = torch.ones_like(probs).scatter_(1, labels[:, None], 0.0)
    gradient = ((probs - targets) * off_true).norm(dim=1)
    return gradient / (probs * off_true).norm(dim=1).clamp_min(MIN_CE_GRADIENT)


class PredictionBuffer:
    """Each training sample's softmax from its last visit, by dataset index; unseen rows read as one-hot."""

    def __init__(self, size: int, num_classes: int, dtype: torch.dtype, device: torch.device) -> None:
        self.probs = torch.zeros(size, num_classes, dtype=dtype, device=device)
        self.seen = torch.zeros(size, dtype=torch.bool, device=device)
        self.written = torch.zeros_like(self.seen)  # rows this process wrote this epoch

    def read(self, index: Tensor, labels: Tensor) -> Tensor:
        """The stored rows (a copy, so a later write cannot reach them), one-hot where never written."""
        rows = self.probs[index].float()
        one_hot = F.one_hot(labels, rows.shape[1]).float()
        return torch.where(self.seen[index, None], rows, one_hot)

    def write(self, index: Tensor, probs: Tensor) -> None:
        self.probs[index] = probs.detach().to(self.probs.dtype)
        self.seen[index] = True
        self.written[index] = True

    def start_epoch(self) -> None:
        self.written = torch.zeros_like(self.seen)


class PSKD(Distiller):
    Params = Params
    per_sample_values = common_values("p_true_student", "loss_per_sample") | {
        "prev_p_true": Value("p(true) last epoch", "the true class's probability stored during the previous epoch: the target's soft part"),
        "target_true": Value("target on the true class", "q_y = (1 - alpha_t) + alpha_t p~_y"),
        "alpha_t": Value("alpha_t", "the weight of the past prediction in the target this epoch"),
        "grad_scale_true": Value("true-class gradient rescaling", "w_gt = 1 - alpha_t (1 - p~_y) / (1 - p_y): the true class's gradient as a share of CE's"),
        "grad_scale_other": Value("other-class gradient rescaling", "how much of CE's push off the true class is left"),
        "grad_norm": Value("gradient norm", "||p - q||: the norm of the gradient at the logits"),
    }

    def __init__(self, params: Params, student: nn.Module, teacher: nn.Module | None, context: MethodContext) -> None:
        super().__init__(params, student, teacher, context)
        dtype = torch.float16 if params.buffer_dtype == "float16" else torch.float32
        self.buffer = PredictionBuffer(context.train_size, context.num_classes, dtype, context.device)

    def alpha_t(self) -> float:
        return pskd_alpha(self.epoch, self.context.total_epochs, self.params.alpha_T)

    def coefficients(self) -> dict[str, float]:
        return {"alpha_t": self.alpha_t()}

    def loss(self, batch: Batch, student_logits: Tensor, teacher_logits: Tensor | None) -> StepOutput:
        alpha_t, logits = self.alpha_t(), _real(student_logits)
        # Read the previous epoch's rows before this batch overwrites them: a sample's own current
        # prediction must never be its target.
        prev_probs = self.buffer.read(batch.index, batch.y)
        targets = pskd_targets(batch.y, prev_probs, alpha_t)
        per_sample_loss = pskd_loss_per_sample(logits, targets)
        probs = F.softmax(logits.detach(), dim=1)
        self.buffer.write(batch.index, probs)
        return StepOutput(
            per_sample_loss.mean(),
            {"loss_pskd": per_sample_loss.mean().detach()},
            self._per_sample(batch, logits.detach(), probs, prev_probs, targets, per_sample_loss.detach(), alpha_t),
        )

    def _per_sample(self, batch, logits, probs, prev_probs, targets, loss, alpha_t) -> dict[str, Tensor]:
        true = batch.y[:, None]
        p_true, prev_p_true = probs.gather(1, true).squeeze(1), prev_probs.gather(1, true).squeeze(1)
        values = {
            "p_true_student": p_true,
            "loss_per_sample": loss,
            "prev_p_true": prev_p_true,
            "target_true": targets.gather(1, true).squeeze(1),
            "alpha_t": torch.full_like(p_true, alpha_t),
            "grad_scale_true": pskd_rescaling(p_true, prev_p_true, alpha_t),
            "grad_scale_other": pskd_other_rescaling(logits, targets, batch.y),
            "grad_norm": (probs - targets).norm(dim=1),
        }
        return {k: v.float() for k, v in values.items()}

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self.buffer.start_epoch()

    def merge_across_processes(self, processes) -> None:
        processes.merge_rows(self.buffer.probs, self.buffer.written)
        processes.merge_rows(self.buffer.seen, self.buffer.written)

    def state_dict(self) -> dict:
        # Plain tensors, so the checkpoint loads with torch.load(weights_only=True).
        return {"predictions": self.buffer.probs, "seen": self.buffer.seen}

    def load_state_dict(self, state: dict) -> None:
        if state["predictions"].shape != self.buffer.probs.shape:
            raise ValueError(
                f"PS-KD buffer in the checkpoint has shape {tuple(state['predictions'].shape)}, "
                f"this run needs {tuple(self.buffer.probs.shape)} (train size x classes)"
            )
        self.buffer.probs.copy_(state["predictions"])
        self.buffer.seen.copy_(state["seen"])
