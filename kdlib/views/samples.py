"""Per-sample values of a run: which values a run offers and how each is called, one sample's values over
the epochs and its predictions, and the numbers the per-sample and method views read.

What a value is called comes from its declaration (`Distiller.per_sample_values`, the probe's and the
evaluation's), never from a list here: a new method's values are offered with no edit to the views.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from kdlib.data import DataBundle, load_data
from kdlib.methods import METHODS, Value
from kdlib.methods.base import describe_value
from kdlib.probes import EVALUATION_VALUES, PROBE_VALUES
from kdlib.store import RunStore
from kdlib.views.runs import load_student, load_teacher, predict_proba, route_epochs

# --- what a run records, and how a person reads it -------------------------------------------------


def run_values(store: RunStore, run_id: str) -> dict[str, Value]:
    """The per-sample values a run may record, as declared: its method's first, then the gradient probe's
    and the evaluation's. Only the engine's when the run's method is no longer registered."""
    try:
        method = METHODS.get(store.config(run_id).method.name).per_sample_values
    except (KeyError, ValueError):  # a removed method, or a config that no longer validates
        method = {}
    return method | {k: v for k, v in (PROBE_VALUES | EVALUATION_VALUES).items() if k not in method}


def value_label(values: dict[str, Value], key: str) -> str:
    """How a per-sample key is shown to a person: its declared label, else the key itself."""
    found = describe_value(values, key)
    return key if found is None else found.label


def declared_keys(values: dict[str, Value], present) -> list[str]:
    """The `present` keys that `values` declares (exactly or by a pattern), in the order of the declaration."""
    offered: list[str] = []
    for name, value in values.items():
        offered += [k for k in present if k not in offered and describe_value({name: value}, k) is not None]
    return offered


def trajectory_keys(store: RunStore, run_id: str, split: str = "train") -> list[str]:
    """The values a run offers to follow over the epochs: the declared ones (`run_values`) that the split
    holds as one number per sample, in the order of the declaration."""
    epochs = store.per_sample_epochs(run_id)
    return _offered(store, run_id, store.per_sample(run_id, epochs[-1], split)) if epochs else []


def _offered(store: RunStore, run_id: str, arrays: dict[str, np.ndarray]) -> list[str]:
    return declared_keys(run_values(store, run_id), [k for k, v in arrays.items() if v.ndim == 1])


# --- one sample of a run, and what the per-sample and method views read --------------------------


def sample_views(train_keys, test_keys) -> list[str]:
    """The per-sample views a run's stored keys allow, by name: rescaling, weights, bias_variance, calibration."""
    train_keys, test_keys = set(train_keys), set(test_keys)
    views = []
    if {"grad_scale_true", "logit_grad_ratio_true"} & train_keys and "p_true_student" in train_keys:
        views.append("rescaling")
    if {"weight", "p_true_student", "p_true_teacher"} <= train_keys:
        views.append("weights")
    if "probs" in test_keys:
        views.append("bias_variance")
    if "reliability" in test_keys:
        views.append("calibration")
    return views


def sample_input(data: DataBundle, split: str, index: int) -> np.ndarray:
    """The input of one sample of a split: an image [C, H, W], a signal [L] or a point [2]."""
    part = getattr(data, split)
    x = part.x[index] if hasattr(part, "x") else part.dataset[index][0]
    return torch.as_tensor(x).float().cpu().numpy()


def sample_trajectories(
    store: RunStore, run_id: str, index: int, split: str = "train", keys: list[str] | None = None
) -> dict[str, pd.Series]:
    """One sample's values over the epochs, for `keys` (default: the split's `trajectory_keys`)."""
    epochs = store.per_sample_epochs(run_id)
    if not epochs:
        return {}
    present = store.per_sample(run_id, epochs[-1], split)
    keys = keys if keys is not None else _offered(store, run_id, present)
    if present and index >= len(next(iter(present.values()))):
        return {}
    return {k: store.trajectory(run_id, k, index, split) for k in keys}


def sample_probabilities(
    store: RunStore, run_id: str, epoch: int, index: int, split: str = "train", data: DataBundle | None = None
) -> dict[str, np.ndarray]:
    """The teacher's and the student's class probabilities for one sample, where they can be had.

    The student's at per-sample `epoch` (0-based): the split's stored probabilities of that epoch,
    else its weights after that epoch (`output.route`) applied to the input. The teacher's: its
    converged weights. A model that cannot be had is left out, so the result may be empty.
    """
    found = {}
    config = store.config(run_id)
    try:
        data = data or load_data(config.data)
        x = sample_input(data, split, index)[None]
    except (FileNotFoundError, OSError, RuntimeError, ValueError, IndexError, AttributeError):
        return found
    stored = store.per_sample(run_id, epoch, split).get("probs")
    if stored is not None and index < len(stored):
        found["student"] = np.asarray(stored[index], dtype=np.float32)
    elif epoch + 1 in route_epochs(store, run_id):
        found["student"] = _probabilities(lambda: load_student(store, run_id, epoch + 1, data), x)
    found["teacher"] = _probabilities(lambda: load_teacher(store, run_id, data), x)
    return {k: found[k] for k in ("teacher", "student") if found.get(k) is not None}


def _probabilities(load, x: np.ndarray) -> np.ndarray | None:
    """softmax of the loaded model on one input; None when it cannot be loaded (missing, or weights of
    another shape after an edited config)."""
    try:
        model = load()
    except (OSError, RuntimeError, ValueError):
        return None
    return None if model is None else predict_proba(model, x)[0]


def sibling_runs(store: RunStore, run_id: str) -> list[str]:
    """Other runs with the same config as `run_id` but for the seed and name: seeds for bias-variance across runs."""

    def recipe(config) -> dict:
        plain = config.to_dict()
        plain.pop("seed", None)
        plain.get("output", {}).pop("name", None)
        return plain

    wanted = recipe(store.config(run_id))
    siblings = []
    for other in store.runs("student").id:
        try:
            if other != run_id and recipe(store.config(other)) == wanted:
                siblings.append(other)
        except (KeyError, ValueError):
            continue
    return siblings


def regularization_flags(
    store: RunStore, run_id: str, split: str = "test", epoch: int = -1, data: DataBundle | None = None
) -> pd.Series | None:
    """WSL's regularization samples of a split: the teacher is less sure of the true class than the student.

    The stored `reg_sample` flag where the split has it (WSL's training split), else computed from the
    converged teacher's and the stored student's true-class probabilities; None without a teacher.
    """
    epochs = store.per_sample_epochs(run_id)
    if not epochs:
        return None
    arrays = store.per_sample(run_id, epochs[epoch] if epoch < 0 else epoch, split)
    if "reg_sample" in arrays:
        return pd.Series(np.asarray(arrays["reg_sample"], float), name="regularization sample").rename_axis("index")
    student = arrays.get("p_true", arrays.get("p_true_student"))
    if student is None:
        return None
    data = data or load_data(store.config(run_id).data)
    try:
        teacher = load_teacher(store, run_id, data)
    except (OSError, RuntimeError, ValueError):  # weights of another shape (an edited teacher section)
        teacher = None
    if teacher is None:
        return None
    part = getattr(data, split)
    probs = np.concatenate([predict_proba(teacher, b.x.numpy()) for b in part.batches(1024)])
    labels = part.targets.cpu().numpy()
    teacher_true = probs[np.arange(len(labels)), labels]
    flags = (teacher_true < np.asarray(student, float)).astype(float)
    return pd.Series(flags, name="regularization sample").rename_axis("index")


def has_route(store: RunStore, run_id: str) -> bool:
    """Whether the run's teacher has a route the student was placed on (`route_probe.npz`)."""
    return (store.run_dir(run_id) / "route_probe.npz").exists()


def search_weights(store: RunStore, run_id: str) -> pd.DataFrame:
    """DFA's search: the `dfa.alpha.*` scalars of the search phase (epoch -1), one row per search step."""
    frame = store.metrics(run_id)
    frame = frame[(frame.epoch == -1) & frame.key.str.startswith("dfa.alpha.")]
    if frame.empty:
        return pd.DataFrame(index=pd.Index([], name="step"))
    return frame.pivot_table(index="step", columns="key", values="value", aggfunc="last").rename_axis(columns=None)


def head_probabilities(store: RunStore, run_id: str) -> pd.DataFrame:
    """Auxiliary heads (LSSKD): the mean true-class probability of each `p_true_head*` key per epoch,
    with the final classifier's (`p_true_student`) beside them."""
    rows = {}
    for epoch in store.per_sample_epochs(run_id):
        arrays = store.per_sample(run_id, epoch, "train")
        heads = sorted(k for k in arrays if k.startswith("p_true_head"))
        if heads:
            row = {f"head {k.removeprefix('p_true_head')}": float(np.nanmean(arrays[k].astype(float))) for k in heads}
            if "p_true_student" in arrays:
                row["final"] = float(np.nanmean(arrays["p_true_student"].astype(float)))
            rows[epoch] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("epoch")


def domain_confidence(store: RunStore, run_id: str, epoch: int) -> dict[str, dict[str, np.ndarray]]:
    """Domain adaptation: source and target confidence per model at `epoch`; empty without `target.*` arrays.

    Source: the true-class probability on the labelled source samples (`p_true_student`, `p_true_teacher`);
    target: the top-class probability on the unlabelled target samples (`target.confidence_*`).
    """
    target = store.per_sample(run_id, epoch, "target")
    if not any(k.startswith("confidence_") for k in target):
        return {}
    source = store.per_sample(run_id, epoch, "train")
    pick = {
        "source": {w: source.get(f"p_true_{w}") for w in ("student", "teacher")},
        "target": {w: target.get(f"confidence_{w}") for w in ("student", "teacher")},
    }
    return {
        side: {w: np.asarray(v, float) for w, v in models.items() if v is not None} for side, models in pick.items()
    }


def method_views(store: RunStore, run_id: str) -> list[str]:
    """The method views a run's stored values allow: dfa_search, heads, domain."""
    views = []
    epochs = store.per_sample_epochs(run_id)
    if not search_weights(store, run_id).empty:
        views.append("dfa_search")
    if epochs and any(k.startswith("p_true_head") for k in store.per_sample(run_id, epochs[-1], "train")):
        views.append("heads")
    if epochs and any(k.startswith("confidence_") for k in store.per_sample(run_id, epochs[-1], "target")):
        views.append("domain")
    return views


def rescaling_summary(samples: pd.DataFrame) -> dict[str, float]:
    """Mean gradient rescaling of the easier and the harder half of the samples, and the share pushed down (< 0)."""
    scale = samples["grad_scale_true" if "grad_scale_true" in samples else "logit_grad_ratio_true"].astype(float)
    p_true = samples["prev_p_true" if "prev_p_true" in samples else "p_true_student"].astype(float)
    easy = p_true >= p_true.median()
    return {
        "easier half": float(scale[easy].mean()),
        "harder half": float(scale[~easy].mean()),
        "pushed down": float((scale < 0).mean()),
    }


def runs_with(store: RunStore, keys: set[str], split: str = "train") -> list[str]:
    """Student runs (newest first) whose last recorded epoch has every one of `keys` in `split`."""
    found = []
    for run_id in store.runs("student").id:
        epochs = store.per_sample_epochs(run_id)
        if epochs and set(keys) <= set(store.per_sample(run_id, epochs[-1], split)):
            found.append(run_id)
    return found
