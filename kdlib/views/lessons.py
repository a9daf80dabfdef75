"""The numbers behind the lessons: softmax at several temperatures, a run's logits, and PS-KD's and
WSL's closed forms on numbers and arrays, worked out by the methods' own tensor functions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from kdlib.data import load_data
from kdlib.methods.pskd import pskd_rescaling as pskd_rescaling_of_tensors
from kdlib.methods.pskd import pskd_targets
from kdlib.methods.wsl import wsl_weights_from_ce
from kdlib.store import RunStore
from kdlib.views.runs import load_student

# --- softmax with temperature ----------------------------------------------------------------------


def softmax_table(logits: np.ndarray, temperatures: list[float], class_names: list[str] | None = None) -> pd.DataFrame:
    """softmax(z / T) for each T, in long form: temperature, class, probability."""
    logits = np.asarray(logits, dtype=np.float64)
    names = class_names or [str(k) for k in range(len(logits))]
    rows = []
    for temperature in temperatures:
        z = logits / temperature
        p = np.exp(z - z.max())
        rows += [
            {"temperature": temperature, "class": n, "probability": v} for n, v in zip(names, p / p.sum(), strict=True)
        ]
    return pd.DataFrame(rows, columns=["temperature", "class", "probability"])


def entropy_curve(logits: np.ndarray, temperatures: np.ndarray) -> pd.DataFrame:
    """Entropy in nats of softmax(z / T) at each T; it rises from near 0 to ln K as T grows."""
    logits = np.asarray(logits, dtype=np.float64)
    z = logits[None, :] / np.asarray(temperatures, dtype=np.float64)[:, None]
    log_p = z - z.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    return pd.DataFrame({"temperature": temperatures, "entropy": -(np.exp(log_p) * log_p).sum(1)})


def run_logits(store: RunStore, run_id: str, split: str = "test") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A finished run's logits on a split, its labels and class names (for lessons on real numbers)."""
    config = store.config(run_id)
    data = load_data(config.data)
    model = load_student(store, run_id, data=data)
    with torch.no_grad():
        logits = [(model(b.x).float(), b.y) for b in getattr(data, split).batches(1024)]
    return (
        torch.cat([z for z, _ in logits]).numpy(),
        torch.cat([y for _, y in logits]).numpy(),
        data.class_names or [str(k) for k in range(data.num_classes)],
    )


# --- the closed forms behind the lessons, from the methods' own functions ---------------------------


def _tensor(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def pskd_rescaling(alpha_t, prev_p_true, p_true) -> np.ndarray:
    """PS-KD's w_gt = 1 - alpha_t (1 - p~_g) / (1 - p_g) (`kdlib.methods.pskd.pskd_rescaling`), broadcast."""
    return pskd_rescaling_of_tensors(_tensor(p_true), _tensor(prev_p_true), alpha_t).numpy()


def pskd_target_true(alpha_t: float, prev_p_true: float) -> float:
    """PS-KD's target on the true class, q_g = (1 - alpha_t) + alpha_t p~_g (`pskd_targets` of a two-class row)."""
    row = torch.tensor([[prev_p_true, 1 - prev_p_true]], dtype=torch.float64)
    return float(pskd_targets(torch.tensor([0]), row, alpha_t)[0, 0])


def wsl_weight(p_student, p_teacher) -> np.ndarray:
    """WSL's w = 1 - exp(-CE_s / CE_t) from the true-class probabilities at T = 1
    (`kdlib.methods.wsl.wsl_weights_from_ce` of CE = -log p_y), broadcast."""
    return wsl_weights_from_ce(_cross_entropy(p_student), _cross_entropy(p_teacher)).numpy()


def _cross_entropy(p_true) -> torch.Tensor:
    return -torch.log(_tensor(p_true).clamp_min(1e-12))
