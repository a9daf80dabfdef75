"""Analysis that is not part of a loss: evaluation of a split, calibration, the gradient probe, and the
per-sample values these record beside a method's own (`EVALUATION_VALUES`, `PROBE_VALUES`).

ECE follows Guo et al. (2017): equal-width confidence bins (m-1)/M < c <= m/M, empty bins skipped,
ECE = sum_m |B_m|/n * |acc(B_m) - conf(B_m)|. The (lo, hi] rule is PS-KD's official one
(`lgcnsai/PS-KD-Pytorch` at 9aa0828, `utils/metric.py`, `compute_bin`: `conf > lower and conf <= upper`),
which uses M = 10 where kdlib's default is 15 (METHODS.md section 11). Every ECE and reliability table in
kdlib comes from `calibration_sums`: float64, on the CPU, by comparison with the edges m/M, so the ECE a
run logs during training is the one `expected_calibration_error` gives on its stored confidences.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlib.data.base import Split
from kdlib.methods.base import Value


def calibration_sums(confidence, correct, num_bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per equal-width bin (m-1)/M < c <= m/M: sample count, summed confidence, summed correctness (float64).

    Binned in float64 on the CPU (MPS has no float64), whatever the confidences' dtype and device: a
    float32 confidence is widened exactly, then compared with the float64 edges m/M. The rule before,
    `ceil(c * M)`, rounds the product: float32(7/15) lies above 7/15, yet its float32 product with 15 is
    exactly 7, so training's float32 path put it one bin lower than the float64 one did; in float64 too,
    the next double above 11/15 times 15 rounds to 11.
    """
    confidence = torch.as_tensor(confidence).detach().to("cpu", torch.float64)
    correct = torch.as_tensor(correct).detach().to("cpu", torch.float64)
    edges = torch.arange(num_bins + 1, dtype=torch.float64) / num_bins
    # bucketize (right=False) returns i with edges[i-1] < c <= edges[i]; c = 0 would give 0, kept in bin 0
    which = (torch.bucketize(confidence, edges) - 1).clamp(0, num_bins - 1)
    return (
        torch.bincount(which, minlength=num_bins),
        torch.bincount(which, confidence, num_bins),
        torch.bincount(which, correct, num_bins),
    )


def calibration_bins(confidence, correct, num_bins: int = 15) -> pd.DataFrame:
    """Per bin: its edges, sample count, mean confidence and accuracy (the reliability diagram)."""
    count, confidence_sum, correct_sum = (t.numpy() for t in calibration_sums(confidence, correct, num_bins))
    edges = np.arange(num_bins + 1) / num_bins
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
    return calibration_error(calibration_sums(confidence, correct, num_bins))


def calibration_error(sums: tuple[Tensor, Tensor, Tensor]) -> float:
    """ECE from `calibration_sums`: sum_m |B_m|/n * |acc(B_m) - conf(B_m)| = (1/n) sum_m |correct sum - confidence sum|."""
    count, confidence_sum, correct_sum = sums
    return float((correct_sum - confidence_sum).abs().sum() / max(int(count.sum()), 1))


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

    Computed on the logits' device from one log-softmax, with one host transfer per result; the ECE
    and the reliability table from the transferred float32 confidences (`calibration_sums`), so they
    are what `expected_calibration_error` gives on the stored `confidence` array.
    """
    labels = labels.to(logits.device)
    log_probs = F.log_softmax(logits.float(), dim=1)
    log_confidence, predicted = log_probs.max(1)
    correct = predicted == labels
    log_p_true = log_probs.gather(1, labels[:, None]).squeeze(1)
    acc, nll = torch.stack([correct.float().mean(), -log_p_true.mean()]).tolist()
    p_true, predicted_f, confidence, correct_f = (
        torch.stack([log_p_true.exp(), predicted.float(), log_confidence.exp(), correct.float()]).cpu().numpy()
    )
    sums = calibration_sums(confidence, correct_f, ece_bins)
    arrays = {"p_true": p_true, "predicted": predicted_f.astype(np.int64), "confidence": confidence,
              "reliability": torch.stack([t.float() for t in sums], 1).numpy()}
    if with_probs:
        arrays["probs"] = log_probs.exp().cpu().numpy()
    return {"acc": acc, "nll": nll, "ece": calibration_error(sums)}, arrays


def route_kl(student_probs: Tensor, checkpoint_probs: Tensor) -> Tensor:
    """Mean KL(p_c || p_s) over the probe set for each checkpoint c: [C, P, K] and [P, K] -> [C]."""
    log_s = student_probs.clamp_min(1e-12).log()
    log_c = checkpoint_probs.clamp_min(1e-12).log()
    return (checkpoint_probs * (log_c - log_s)).sum(-1).mean(-1)


class RouteProbe:
    """Where the student sits on the teacher's route: KL(p_c || p_s) on a fixed probe set, every checkpoint c.

    The checkpoints' predictions on the probe set are computed once, by `prepare()` (the trainer calls it
    once its first step is logged: loading every checkpoint need not delay a live view's first point), and
    saved beside the run at `path` (`route_probe.npz`: epochs, probs [C, P, K]); each epoch adds the
    student's predictions.
    """

    def __init__(self, route, probe_x: Tensor, autocast, path=None) -> None:
        self.route, self.epochs, self.probe_x, self.autocast = route, list(route.epochs), probe_x, autocast
        self.path, self._probs = path, None

    def prepare(self) -> Tensor:
        """The checkpoints' predictions on the probe set, [C, P, K]: worked out, and saved, the first time."""
        if self._probs is None:
            with torch.no_grad(), self.autocast():
                probs = [F.softmax(self.route.load(c)(self.probe_x).float(), dim=1) for c in self.epochs]
                self._probs = torch.stack(probs)
            if self.path is not None:
                self.save(self.path)
        return self._probs

    def save(self, path) -> None:
        np.savez(path, epochs=np.array(self.epochs), probs=self.prepare().cpu().numpy().astype(np.float16))

    @torch.no_grad()
    def measure(self, student: nn.Module) -> tuple[dict[str, float], np.ndarray]:
        was_training = student.training
        student.eval()
        with self.autocast():
            student_probs = F.softmax(student(self.probe_x).float(), dim=1)
        student.train(was_training)
        distances = route_kl(student_probs, self.prepare()).tolist()
        scalars = {f"route_kl.{c:04d}": d for c, d in zip(self.epochs, distances, strict=True)}
        return scalars, student_probs.cpu().numpy()


# Stored probabilities are float16, whose smallest subnormal is 2^-24: a stored 0 stands for a probability
# below 2^-25, so that is the most a 0 can be raised to without claiming more than the store knows.
PROBABILITY_FLOOR = 2.0**-25


def bias_variance(probs: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """Per sample, Heskes' decomposition of the log loss over R predictions of the same samples.

    probs [R, N, K] (R snapshots, seeds or runs), labels [N]. With the normalized geometric mean
    ybar = exp(mean_r log p_r) / Z:  mean_r CE(y, p_r) = bias + variance, where
    bias = CE(y, ybar) = -log ybar_y and variance = mean_r KL(ybar || p_r) = -log Z (METHODS.md section 11).

    The rows are first clipped to `PROBABILITY_FLOOR` (2^-25, what a float16 0 stands for at most) and
    divided by their sum, in float64: the store keeps float16 probabilities, whose rows miss 1 by 1e-4
    and more, and Z <= 1 (variance >= 0) holds only for distributions; unnormalised rows gave variances
    down to -1.3e-4. The loss is that of the renormalised rows.
    """
    probs = np.clip(np.asarray(probs, dtype=np.float64), PROBABILITY_FLOOR, None)
    log_probs = np.log(probs / probs.sum(-1, keepdims=True))
    mean_log = log_probs.mean(0)
    top = mean_log.max(1, keepdims=True)
    log_z = (top + np.log(np.exp(mean_log - top).sum(1, keepdims=True)))[:, 0]
    rows = np.arange(len(labels))
    bias = -(mean_log[rows, labels] - log_z)
    loss = -log_probs[:, rows, labels].mean(0)
    # Z <= 1 exactly; when the predictions agree, float64 rounding leaves -log Z within 1e-15 either side of 0
    variance = np.maximum(-log_z, 0.0)
    return pd.DataFrame({"bias": bias, "variance": variance, "loss": loss}).rename_axis("index")


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
