"""Analyses over stored runs, kept in the store beside them: bias and variance per sample.

Snapshot estimate (one run): the test-set predictions of its last k epochs that have full
probabilities (`probes.probs_every`); measures optimization noise. Seed estimate (several runs of
one config with different seeds): the last epoch of each run; closer to the textbook variance.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kdlib.probes import bias_variance
from kdlib.store import RunStore


def _probs_epochs(store: RunStore, run_id: str, split: str) -> list[int]:
    return store.per_sample_epochs(run_id, split=split, key="probs")


def bias_variance_of_run(store: RunStore, run_id: str, last: int = 5, split: str = "test") -> pd.DataFrame:
    """Per-sample bias and variance over the run's last `last` epochs with stored probabilities; saved."""
    epochs = _probs_epochs(store, run_id, split)[-last:]
    if len(epochs) < 2:
        raise ValueError(
            f"run {run_id} has {len(epochs)} epoch(s) with stored {split} probabilities; bias and "
            "variance need at least 2 (set probes.probs_every: 1)"
        )
    probs = np.stack([store.per_sample(run_id, e, split)["probs"] for e in epochs])
    frame = bias_variance(probs, np.asarray(store.per_sample(run_id, epochs[-1], split)["label"], dtype=np.int64))
    return store.save_analysis(run_id, f"bias_variance.{split}.last{last}", frame.assign(epochs=len(epochs)))


def bias_variance_of_runs(store: RunStore, run_ids: list[str], split: str = "test") -> pd.DataFrame:
    """Per-sample bias and variance across runs (seeds): the last stored probabilities of each; saved with the first."""
    if len(run_ids) < 2:
        raise ValueError("bias and variance across runs need at least 2 runs (e.g. one config with several seeds)")
    last = [(r, _probs_epochs(store, r, split)) for r in run_ids]
    missing = [r for r, epochs in last if not epochs]
    if missing:
        raise ValueError(f"runs {missing} have no stored {split} probabilities")
    probs = np.stack([store.per_sample(r, epochs[-1], split)["probs"] for r, epochs in last])
    labels = np.asarray(store.per_sample(run_ids[0], last[0][1][-1], split)["label"], dtype=np.int64)
    frame = bias_variance(probs, labels).assign(runs=len(run_ids))
    return store.save_analysis(run_ids[0], f"bias_variance.{split}.runs-{'+'.join(sorted(run_ids))[:80]}", frame)


def hellinger_pca(points: np.ndarray, components: int = 2) -> np.ndarray:
    """Rows of probabilities ([M, P, K]: M models on P samples) placed in 2-D: the principal components
    of sqrt(p) (the Hellinger embedding, where distances are meaningful between distributions)."""
    flat = np.sqrt(np.clip(points.reshape(len(points), -1), 0, None))
    centered = flat - flat.mean(0)
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    return centered @ vt[:components].T


def route_layout(store: RunStore, run_id: str, up_to_epoch: int | None = None) -> pd.DataFrame:
    """The teacher's route checkpoints and the student's epochs in one 2-D map of output space.

    Reads the route probe saved with the run (the checkpoints' predictions on a fixed probe set of
    training samples), the student's predictions on the same set every epoch, and, where the
    method records them, a moving teacher's (ProKT). Anchors (RCO) are flagged.
    """
    path = store.run_dir(run_id) / "route_probe.npz"
    if not path.exists():
        raise ValueError(f"run {run_id} has no route probe: its teacher was trained without a route "
                         "(teacher.route) or it has no teacher")
    with np.load(path) as saved:
        route_epochs, route_probs = saved["epochs"].tolist(), saved["probs"].astype(np.float32)
    epochs = [e for e in store.per_sample_epochs(run_id) if up_to_epoch is None or e <= up_to_epoch]
    rows, points = [], list(route_probs)
    rows += [{"who": "teacher", "epoch": e} for e in route_epochs]
    for who, key in (("student", "probs"), ("moving teacher", "teacher_probs")):
        for epoch in epochs:
            arrays = store.per_sample(run_id, epoch, "probe")
            if key in arrays:
                points.append(np.asarray(arrays[key], dtype=np.float32))
                rows.append({"who": who, "epoch": epoch + 1})  # the weights after epoch+1 completed epochs
    frame = pd.DataFrame(rows)
    size = min(len(p) for p in points)  # every probe holds the first training samples: keep the common ones
    xy = hellinger_pca(np.stack([p[:size] for p in points]))
    frame["x"], frame["y"] = xy[:, 0], xy[:, 1]
    metrics = store.epoch_metrics(run_id)
    anchors = set(metrics["anchor_epoch"].dropna().astype(int)) if "anchor_epoch" in metrics else set()
    current = int(metrics["anchor_epoch"].dropna().iloc[-1]) if anchors and (up_to_epoch is None) else None
    if anchors and up_to_epoch is not None and up_to_epoch in metrics.index:
        current = int(metrics.loc[up_to_epoch, "anchor_epoch"])
    frame["anchor"] = (frame.who == "teacher") & frame.epoch.isin(anchors)
    frame["current"] = (frame.who == "teacher") & (frame.epoch == current)
    return frame
