"""Analysis that is not part of a loss: evaluation of a split, calibration.

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


def calibration_sums(confidence: Tensor, correct: Tensor, num_bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per equal-width bin (m-1)/M < c <= m/M: sample count, summed confidence, summed correctness."""
    which = (torch.ceil(confidence * num_bins).long() - 1).clamp(0, num_bins - 1)
    return (torch.bincount(which, minlength=num_bins), torch.bincount(which, confidence, num_bins),
            torch.bincount(which, correct.to(confidence.dtype), num_bins))


def calibration_bins(confidence, correct, num_bins: int = 15) -> pd.DataFrame:
    """Per bin: its edges, sample count, mean confidence and accuracy (the reliability diagram)."""
    sums = calibration_sums(torch.as_tensor(confidence, dtype=torch.float64), torch.as_tensor(correct), num_bins)
    count, confidence_sum, correct_sum = (t.cpu().numpy() for t in sums)
    edges = np.linspace(0, 1, num_bins + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.DataFrame({"lower": edges[:-1], "upper": edges[1:], "count": count,
                             "confidence": confidence_sum / count, "accuracy": correct_sum / count})


def expected_calibration_error(confidence, correct, num_bins: int = 15) -> float:
    return float(_ece(torch.as_tensor(confidence, dtype=torch.float64), torch.as_tensor(correct), num_bins))


def _ece(confidence: Tensor, correct: Tensor, num_bins: int) -> Tensor:
    """sum_m |B_m|/n * |acc(B_m) - conf(B_m)|, which is (1/n) sum_m |correct sum - confidence sum|."""
    count, confidence_sum, correct_sum = calibration_sums(confidence, correct, num_bins)
    return (correct_sum - confidence_sum).abs().sum() / max(len(confidence), 1)


@torch.no_grad()
def predict(model: nn.Module, split: Split, batch_size: int, device: torch.device, autocast) -> Tensor:
    """Float32 logits for every sample of a split, in dataset order."""
    was_training = model.training
    model.eval()
    outputs = []
    for batch in split.batches(max(batch_size, 512)):
        with autocast():
            outputs.append(model(batch.x.to(device, non_blocking=True)).float())
    model.train(was_training)
    return torch.cat(outputs)


def evaluate(logits: Tensor, labels: Tensor, ece_bins: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Accuracy, NLL and ECE of a split, and per sample its true-class probability, prediction and confidence.

    Computed on the logits' device with one host transfer for the scalars and one for the arrays.
    """
    labels = labels.to(logits.device)
    log_probs = F.log_softmax(logits.float(), dim=1)
    log_confidence, predicted = log_probs.max(1)
    confidence, correct = log_confidence.exp(), predicted == labels
    log_p_true = log_probs.gather(1, labels[:, None]).squeeze(1)
    ece = _ece(confidence, correct, ece_bins)
    acc, nll, ece = torch.stack([correct.float().mean(), -log_p_true.mean(), ece]).tolist()
    p_true, predicted_f, confidence = torch.stack([log_p_true.exp(), predicted.float(), confidence]).cpu().numpy()
    arrays = {"p_true": p_true, "predicted": predicted_f.astype(np.int64), "confidence": confidence}
    return {"acc": acc, "nll": nll, "ece": ece}, arrays
