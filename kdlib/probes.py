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


def calibration_bins(confidence: np.ndarray, correct: np.ndarray, num_bins: int = 15) -> pd.DataFrame:
    """Per bin: its edges, sample count, mean confidence and accuracy (the reliability diagram)."""
    confidence, correct = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0, 1, num_bins + 1)
    which = np.clip(np.ceil(confidence * num_bins).astype(int) - 1, 0, num_bins - 1)
    count = np.bincount(which, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(which, confidence, num_bins) / count
        accuracy = np.bincount(which, correct, num_bins) / count
    return pd.DataFrame(
        {"lower": edges[:-1], "upper": edges[1:], "count": count, "confidence": mean_confidence, "accuracy": accuracy}
    )


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, num_bins: int = 15) -> float:
    bins = calibration_bins(confidence, correct, num_bins)
    filled = bins[bins["count"] > 0]
    return float((filled["count"] * (filled.accuracy - filled.confidence).abs()).sum() / max(len(confidence), 1))


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
    """Accuracy, NLL and ECE of a split, and its per-sample true-class probability and prediction."""
    labels = labels.to(logits.device)
    log_probs = F.log_softmax(logits, dim=1)
    confidence, predicted = log_probs.exp().max(1)
    correct = predicted == labels
    scalars = {"acc": correct.float().mean().item(), "nll": F.nll_loss(log_probs, labels).item()}
    confidence_np, correct_np = confidence.cpu().numpy(), correct.cpu().numpy()
    scalars["ece"] = expected_calibration_error(confidence_np, correct_np, ece_bins)
    per_sample = {
        "p_true": log_probs.gather(1, labels[:, None]).squeeze(1).exp().cpu().numpy(),
        "predicted": predicted.cpu().numpy(),
        "confidence": confidence_np,
    }
    return scalars, per_sample
