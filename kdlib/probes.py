"""Analysis that is not part of a loss: evaluation of a split, calibration, the gradient probe, and the
per-sample values these record beside a method's own (`EVALUATION_VALUES`, `PROBE_VALUES`).

ECE follows Guo et al. (2017): equal-width confidence bins (m-1)/M < c <= m/M, empty bins skipped,
ECE = sum_m |B_m|/n * |acc(B_m) - conf(B_m)|; checked against PS-KD's `utils/metric.py`, which uses
M = 10 where kdlib's default is 15 (METHODS.md section 11).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlib.data.base import Split
from kdlib.methods.base import Value


def calibration_sums(confidence: Tensor, correct: Tensor, num_bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per equal-width bin (m-1)/M < c <= m/M: sample count, summed confidence, summed correctness."""
    which = (torch.ceil(confidence * num_bins).long() - 1).clamp(0, num_bins - 1)
    return (
        torch.bincount(which, minlength=num_bins),
        torch.bincount(which, confidence, num_bins),
        torch.bincount(which, correct.to(confidence.dtype), num_bins),
    )


def calibration_bins(confidence, correct, num_bins: int = 15) -> pd.DataFrame:
    """Per bin: its edges, sample count, mean confidence and accuracy (the reliability diagram)."""
    sums = calibration_sums(torch.as_tensor(confidence, dtype=torch.float64), torch.as_tensor(correct), num_bins)
    count, confidence_sum, correct_sum = (t.cpu().numpy() for t in sums)
    edges = np.linspace(0, 1, num_bins + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.DataFrame(
            {
                "lower": edges[:-1],
                "upper": edges[1:],
                "count": count,
                "confidence": confidence_sum / count,
                "accuracy": correct_sum / count,
            }
        )


def expected_calibration_error(confidence, correct, num_bins: int = 15) -> float:
    return float(_ece(torch.as_tensor(confidence, dtype=torch.float64), torch.as_tensor(correct), num_bins))


def _ece(confidence: Tensor, correct: Tensor, num_bins: int) -> Tensor:
    """sum_m |B_m|/n * |acc(B_m) - conf(B_m)|, which is (1/n) sum_m |correct sum - confidence sum|."""
    count, confidence_sum, correct_sum = calibration_sums(confidence, correct, num_bins)
    return (correct_sum - confidence_sum).abs().sum() / max(len(confidence), 1)


PREDICT_BATCH = 4096  # rows per forward pass when predicting
# Splits go through the model together only when their inputs are this small: a pass's fixed costs
# then weigh the most, while larger passes run slower per sample (bench/overhead.py's image setting,
# 2,100 CIFAR-shaped validation and test images: overhead_ratio_images 1.036 in one pass, 1.014 in two).
TOGETHER_ELEMENTS = 1 << 18


@torch.no_grad()
def predict_splits(model: nn.Module, splits: list[Split], batch_size: int, device: torch.device, autocast
                   ) -> list[Tensor]:
    """Float32 logits for every sample of each split. Small in-memory splits (validation and test of a
    small set, every epoch) take one forward pass together: its fixed costs once, not per split."""
    if not splits:
        return []
    was_training = model.training
    model.eval()
    if all(hasattr(split, "x") for split in splits) and sum(split.x.numel() for split in splits) <= TOGETHER_ELEMENTS:
        with autocast():
            together = model(torch.cat([split.x for split in splits]).to(device, non_blocking=True)).float()
        logits = list(together.split([len(split) for split in splits]))
    else:
        logits = []
        for split in splits:
            outputs = []
            for batch in split.batches(max(batch_size, PREDICT_BATCH)):
                with autocast():
                    outputs.append(model(batch.x.to(device, non_blocking=True)).float())
            logits.append(torch.cat(outputs))
    model.train(was_training)
    return logits


# What `evaluate` records per sample of an evaluation split (val, test).
EVALUATION_VALUES = {
    "p_true": Value("p(true class)", "the model's probability of the true class, evaluated after the epoch"),
    "predicted": Value("predicted class", "the class the model ranks first"),
    "confidence": Value("confidence (top class)", "the probability of the class the model ranks first"),
}


def evaluate(logits: Tensor, labels: Tensor, ece_bins: int, with_probs: bool = False
             ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Accuracy, NLL and ECE of a split; per sample its true-class probability, prediction and
    confidence, the reliability table [bins, 3] and, if asked, the full probabilities.

    Computed on the logits' device from one log-softmax, with one host transfer per result.
    """
    labels = labels.to(logits.device)
    log_probs = F.log_softmax(logits.float(), dim=1)
    log_confidence, predicted = log_probs.max(1)
    confidence, correct = log_confidence.exp(), predicted == labels
    log_p_true = log_probs.gather(1, labels[:, None]).squeeze(1)
    sums = calibration_sums(confidence, correct, ece_bins)
    ece = (sums[2] - sums[1]).abs().sum() / max(len(confidence), 1)
    acc, nll, ece = torch.stack([correct.float().mean(), -log_p_true.mean(), ece]).tolist()
    p_true, predicted_f, confidence = torch.stack([log_p_true.exp(), predicted.float(), confidence]).cpu().numpy()
    arrays = {"p_true": p_true, "predicted": predicted_f.astype(np.int64), "confidence": confidence,
              "reliability": torch.stack([t.float() for t in sums], 1).cpu().numpy()}
    if with_probs:
        arrays["probs"] = log_probs.exp().cpu().numpy()
    return {"acc": acc, "nll": nll, "ece": ece}, arrays


def route_kl(student_probs: Tensor, checkpoint_probs: Tensor) -> Tensor:
    """Mean KL(p_c || p_s) over the probe set for each checkpoint c: [C, P, K] and [P, K] -> [C]."""
    log_s = student_probs.clamp_min(1e-12).log()
    log_c = checkpoint_probs.clamp_min(1e-12).log()
    return (checkpoint_probs * (log_c - log_s)).sum(-1).mean(-1)


class RouteProbe:
    """Where the student sits on the teacher's route: KL(p_c || p_s) on a fixed probe set, every checkpoint c.

    The checkpoints' predictions on the probe set are computed once and saved beside the run
    (`route_probe.npz`: epochs, probs [C, P, K]); each epoch adds the student's predictions.
    """

    def __init__(self, route, probe_x: Tensor, autocast) -> None:
        self.epochs, self.probe_x, self.autocast = list(route.epochs), probe_x, autocast
        with torch.no_grad(), autocast():
            self.probs = torch.stack([F.softmax(route.load(c)(probe_x).float(), dim=1) for c in self.epochs])

    def save(self, path) -> None:
        np.savez(path, epochs=np.array(self.epochs), probs=self.probs.cpu().numpy().astype(np.float16))

    @torch.no_grad()
    def measure(self, student: nn.Module) -> tuple[dict[str, float], np.ndarray]:
        was_training = student.training
        student.eval()
        with self.autocast():
            student_probs = F.softmax(student(self.probe_x).float(), dim=1)
        student.train(was_training)
        distances = route_kl(student_probs, self.probs).tolist()
        scalars = {f"route_kl.{c:04d}": d for c, d in zip(self.epochs, distances, strict=True)}
        return scalars, student_probs.cpu().numpy()


def bias_variance(probs: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """Per sample, Heskes' decomposition of the log loss over R predictions of the same samples.

    probs [R, N, K] (R snapshots, seeds or runs), labels [N]. With the normalized geometric mean
    ybar = exp(mean_r log p_r) / Z:  mean_r CE(y, p_r) = bias + variance, where
    bias = CE(y, ybar) = -log ybar_y and variance = mean_r KL(ybar || p_r) = -log Z (METHODS.md section 11).
    """
    log_probs = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, None))
    mean_log = log_probs.mean(0)
    top = mean_log.max(1, keepdims=True)
    log_z = (top + np.log(np.exp(mean_log - top).sum(1, keepdims=True)))[:, 0]
    rows = np.arange(len(labels))
    bias = -(mean_log[rows, labels] - log_z)
    loss = -log_probs[:, rows, labels].mean(0)
    return pd.DataFrame({"bias": bias, "variance": -log_z, "loss": loss}).rename_axis("index")


# What the gradient probe (`logit_gradient_stats`) records per training sample, whatever the method.
PROBE_VALUES = {
    "logit_grad_norm": Value(
        "gradient norm at the logits", "||d loss_i / d z_i||: how hard the step pushes the sample"
    ),
    "logit_grad_ratio": Value(
        "gradient norm / CE's", "the gradient's norm at the logits as a share of plain cross-entropy's, ||p - e_y||"
    ),
    "logit_grad_ratio_true": Value(
        "true-class gradient / CE's",
        "the true-class logit's gradient as a share of cross-entropy's, p_y - 1 (PS-KD's w_gt, measured)",
    ),
}


def logit_gradient_stats(logits: Tensor, grad: Tensor, labels: Tensor, ce_grad: Tensor | None = None
                         ) -> dict[str, Tensor]:
    """Per sample: the norm of d loss_i / d logits_i and its ratio to plain cross-entropy's, p - e_y.

    `logit_grad_ratio_true` is the true-class component against CE's (p_y - 1), PS-KD's w_gt.
    Denominators are kept away from 0 (1e-4) so a confident sample's ratio stays finite in float16.
    `ce_grad`: p - e_y, when the caller has it already.
    """
    labels = labels.to(grad.device)  # a DataLoader split's labels stay on the CPU
    if ce_grad is None:
        probs = F.softmax(logits.float(), dim=1)
        ce_grad = probs - F.one_hot(labels, probs.shape[1]).float()
    rows = labels[:, None]
    true, ce_true = grad.gather(1, rows).squeeze(1), ce_grad.gather(1, rows).squeeze(1)
    norm = grad.norm(dim=1)
    return {"logit_grad_norm": norm, "logit_grad_ratio": norm / ce_grad.norm(dim=1).clamp_min(1e-4),
            "logit_grad_ratio_true": true / ce_true.clamp_max(-1e-4)}
