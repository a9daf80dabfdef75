"""Read-side helpers over the store: one run for a notebook, summaries of several runs for the app,
models read back from a run's folder, and the numbers behind the lessons and 2-D views.

Everything here returns plain frames, arrays or models; figures are `kdlib.viz`'s job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from kdlib.config import stable_hash
from kdlib.data import DataBundle, load_data
from kdlib.methods import METHODS
from kdlib.models import build_model
from kdlib.schedules import as_schedule, schedule_curve
from kdlib.store import RunStore


@dataclass
class LoadedRun:
    run_id: str
    store: RunStore

    @property
    def info(self) -> dict:
        return self.store.run(self.run_id)

    @property
    def config(self):
        return self.store.config(self.run_id)

    @property
    def metrics(self) -> pd.DataFrame:
        """One row per epoch, one column per scalar."""
        return self.store.epoch_metrics(self.run_id)

    @property
    def epochs(self) -> list[int]:
        """Epochs that have per-sample values."""
        return self.store.per_sample_epochs(self.run_id)

    def samples(self, epoch: int = -1, split: str = "train") -> pd.DataFrame:
        """Per-sample values of one epoch (default: the last), one row per dataset index."""
        epochs = self.epochs
        if not epochs:
            raise KeyError(f"run {self.run_id} has no per-sample values yet")
        epoch = epochs[epoch] if epoch < 0 else epoch
        arrays = self.store.per_sample(self.run_id, epoch, split)
        columns = {k: v.astype(float) if v.dtype.kind == "f" else v for k, v in arrays.items() if v.ndim == 1}
        return pd.DataFrame(columns).rename_axis("index")

    def arrays(self, epoch: int = -1, split: str = "train") -> dict:
        """Every array of one epoch, 2-D ones too (`probs` [N, K], `reliability` [bins, 3])."""
        epochs = self.epochs
        return self.store.per_sample(self.run_id, epochs[epoch] if epoch < 0 else epoch, split)

    def trajectory(self, index: int, key: str = "p_true_student", split: str = "train") -> pd.Series:
        return self.store.trajectory(self.run_id, key, index, split)


def load_run(run_id: str | None = None, home: str | Path | None = None) -> LoadedRun:
    """A run by id (default: the latest student run in the store)."""
    store = RunStore(home)
    run_id = run_id or store.latest_run_id()
    store.run(run_id)
    return LoadedRun(run_id, store)


# --- summaries of several runs ---------------------------------------------------------------


def describe_model(spec) -> str:
    """`mlp hidden=[4]`: a model's name and the params that differ from their defaults."""
    changed = spec.model_dump(mode="json", exclude_defaults=True, exclude={"name"})
    return " ".join([spec.name, *(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in changed.items())])


def _method_numbers(config) -> dict[str, float]:
    """Every numeric method param; a schedule counts as its mean over the run's epochs."""
    numbers = {}
    for name, info in type(config.method).model_fields.items():
        value = getattr(config.method, name)
        if (info.json_schema_extra or {}).get("schedulable"):
            curve = schedule_curve(value, config.epochs)
            numbers[name] = curve[0] if len(set(curve)) == 1 else float(np.mean(curve))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            numbers[name] = float(value)
    return numbers


def runs_summary(store: RunStore, run_ids: list[str]) -> pd.DataFrame:
    """One row per run: what it was (method, models, data, numeric method params) and how it ended.

    Schedulable coefficients (temperature, w_kd, ...) appear as their mean over the epochs. Runs that
    are gone from the store, or whose config no longer validates, are left out.
    """
    rows = []
    for run_id in run_ids:
        try:
            info, config = store.run(run_id), store.config(run_id)
        except (KeyError, ValueError):
            continue
        last = store.epoch_metrics(run_id).iloc[-1:].to_dict("records")
        last = last[0] if last else {}
        rows.append(
            {
                "id": run_id,
                "name": info["name"],
                "status": info["status"],
                "method": config.method.name,
                "student": describe_model(config.student),
                "teacher": describe_model(config.teacher.model) if config.teacher else None,
                "data": config.data.name,
                "epochs": config.epochs,
                "lr": config.optimizer.lr,
                **_method_numbers(config),
                "test_acc": last.get("test.acc", np.nan),
                "test_ece": last.get("test.ece", np.nan),
            }
        )
    return pd.DataFrame(rows)


# --- sweeps: a study's trials side by side --------------------------------------------------------

STUDY_OUTCOMES = {"val.acc": "val_acc", "test.acc": "test_acc", "test.nll": "test_nll", "test.ece": "test_ece"}
_TRIAL_COLUMNS = {"trial", "run_id", "name", "state", "value", "status", "metric", "direction", "epochs_done"}


def study_summary(store: RunStore, study: str) -> pd.DataFrame:
    """`RunStore.study_trials` (trial, run_id, name, state, value, status, metric, direction, one column per
    searched param) with each run's epochs done and its last epoch's val/test accuracy, test NLL and ECE."""
    trials = store.study_trials(study)
    finals = []
    for run_id in trials.run_id:
        epochs = store.epoch_metrics(run_id)
        last = epochs.iloc[-1] if len(epochs) else pd.Series(dtype=float)
        finals.append({"epochs_done": len(epochs), **{n: last.get(k, np.nan) for k, n in STUDY_OUTCOMES.items()}})
    return trials.join(pd.DataFrame(finals, index=trials.index, columns=["epochs_done", *STUDY_OUTCOMES.values()]))


def searched_params(trials: pd.DataFrame) -> list[str]:
    """The searched params (config paths) among a `study_summary`'s columns."""
    return [c for c in trials.columns if c not in _TRIAL_COLUMNS and c not in STUDY_OUTCOMES.values()]


def study_curves(store: RunStore, trials: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each trial's epoch metrics, labelled `trial N` (for `viz.study_curves_figure`)."""
    return {f"trial {t}": store.epoch_metrics(r) for t, r in zip(trials.trial, trials.run_id, strict=True)}


def best_trial(trials: pd.DataFrame) -> pd.Series | None:
    """The complete trial with the best value in the study's direction; None before one completes."""
    complete = trials[trials.state == "complete"].dropna(subset=["value"])
    if complete.empty:
        return None
    values = complete.value.astype(float)
    return complete.loc[values.idxmax() if complete.direction.iloc[0] == "maximize" else values.idxmin()]


def teacher_run_id(store: RunStore, run_id: str) -> str | None:
    """The newest teacher run that trains the teacher of `run_id` (same recipe), if the store has one."""
    from kdlib.teachers import teacher_run_config

    config = store.config(run_id)
    if config.teacher is None or config.teacher.checkpoint:
        return None
    wanted = teacher_run_config(config).to_dict()
    for candidate in store.runs("teacher").id:
        try:
            if store.config(candidate).to_dict() == wanted:
                return candidate
        except (KeyError, ValueError):
            continue
    return None


# --- models of a run, read back from its folder ------------------------------------------------


def route_epochs(store: RunStore, run_id: str) -> list[int]:
    """Epochs after which the run saved its weights (`output.route`); 0 is the initialization."""
    return sorted(int(p.stem.split("_")[1]) for p in (store.run_dir(run_id) / "route").glob("epoch_*.pt"))


def _load_weights(model: nn.Module, path: Path) -> nn.Module:
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval().requires_grad_(False)


def load_student(store: RunStore, run_id: str, epoch: int | None = None, data: DataBundle | None = None) -> nn.Module:
    """The run's model after `epoch` epochs (a route file), or its final weights when `epoch` is None.

    `data` saves loading the dataset again when the caller has it (only its shapes are used).
    """
    config = store.config(run_id)
    folder = store.run_dir(run_id)
    path = folder / "model.pt" if epoch is None else folder / "route" / f"epoch_{epoch:04d}.pt"
    if not path.exists():
        saved = route_epochs(store, run_id)
        raise FileNotFoundError(
            f"run {run_id} has no weights {'at the end' if epoch is None else f'after epoch {epoch}'}; "
            f"its route has epochs {saved}"
            + ("" if saved else " (set `output: {route: {every: 1}}` in its config to save them)")
        )
    data = data or load_data(config.data)
    return _load_weights(build_model(config.student, data.input_shape, data.num_classes), path)


def teacher_weights(store: RunStore, config) -> Path | None:
    """Where the teacher's final weights of a config are, without training it; None if not (yet) there."""
    from kdlib.teachers import teacher_key

    if config.teacher is None:
        return None
    if config.teacher.checkpoint:
        path = Path(config.teacher.checkpoint).expanduser()
        path = path if path.exists() else store.home / config.teacher.checkpoint
    else:
        path = store.home / "teachers" / stable_hash(teacher_key(config))
    path = path / "model.pt" if path.is_dir() else path
    return path if path.is_file() else None


def load_teacher(store: RunStore, run_id: str, data: DataBundle | None = None) -> nn.Module | None:
    """The converged teacher of a run, read-only (None when the run has no teacher, its method uses none, or
    it is not trained yet)."""
    config = store.config(run_id)
    if not METHODS.get(config.method.name).needs_teacher:  # e.g. PS-KD: a teacher section is not trained
        return None
    path = teacher_weights(store, config)
    if path is None:
        return None
    data = data or load_data(config.data)
    return _load_weights(build_model(config.teacher.model, data.input_shape, data.num_classes), path)


# --- predictions over a 2-D plane ----------------------------------------------------------------


@torch.no_grad()
def predict_proba(model: nn.Module, x: np.ndarray, temperature: float = 1.0, batch_size: int = 8192) -> np.ndarray:
    """softmax(model(x) / T) as a float32 array [N, K]."""
    x = torch.as_tensor(np.asarray(x, dtype=np.float32))
    chunks = [F.softmax(model(x[i : i + batch_size]).float() / temperature, 1) for i in range(0, len(x), batch_size)]
    return torch.cat(chunks).numpy() if chunks else np.zeros((0, 0), np.float32)


def plane_grid(points: np.ndarray, resolution: int = 120, margin: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Axis values of a grid that covers 2-D `points` with a `margin` (share of the span) on each side."""
    points = np.asarray(points, dtype=np.float32)
    low, high = points.min(0), points.max(0)
    pad = (high - low) * margin + 1e-3
    return tuple(np.linspace(low[d] - pad[d], high[d] + pad[d], resolution, dtype=np.float32) for d in (0, 1))


def grid_probabilities(model: nn.Module, xs: np.ndarray, ys: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities at every grid point: [len(ys), len(xs), K], row i at y = ys[i]."""
    gx, gy = np.meshgrid(xs, ys)
    probs = predict_proba(model, np.stack([gx.ravel(), gy.ravel()], 1), temperature)
    return probs.reshape(len(ys), len(xs), -1)


def coefficient_at(config, name: str, epoch: int, default: float = 1.0) -> float:
    """A method coefficient (e.g. temperature) during 0-based `epoch`; `default` if the method has none."""
    if name not in type(config.method).model_fields:
        return default
    return as_schedule(getattr(config.method, name)).value_at(epoch, config.epochs)


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


# --- one sample of a run, and what the per-sample and method views read --------------------------

# Keys worth following over epochs, in the order they are offered (those a split has).
TRAJECTORY_KEYS = (
    "p_true_student",
    "p_true_teacher",
    "p_true_anchor",
    "prev_p_true",
    "target_true",
    "weight",
    "grad_scale_true",
    "logit_grad_ratio_true",
    "kl",
    "kl_anchor",
    "p_true",
    "confidence",
)


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
    """One sample's values over the epochs, for `keys` (default: the `TRAJECTORY_KEYS` the split has)."""
    epochs = store.per_sample_epochs(run_id)
    if not epochs:
        return {}
    present = store.per_sample(run_id, epochs[-1], split)
    keys = keys if keys is not None else [k for k in TRAJECTORY_KEYS if k in present and present[k].ndim == 1]
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


# --- the closed forms behind the lessons ----------------------------------------------------------


def pskd_rescaling(alpha_t, prev_p_true, p_true) -> np.ndarray:
    """PS-KD's w_gt = 1 - alpha_t (1 - p~_g) / (1 - p_g): the true-class gradient as a share of plain CE's."""
    p_true = np.asarray(p_true, dtype=np.float64)
    return 1 - alpha_t * (1 - np.asarray(prev_p_true, dtype=np.float64)) / np.clip(1 - p_true, 1e-6, None)


def wsl_weight(p_student, p_teacher) -> np.ndarray:
    """WSL's w = 1 - exp(-CE_s / CE_t), from the true-class probabilities of student and teacher (T = 1)."""
    ce_student = -np.log(np.clip(np.asarray(p_student, dtype=np.float64), 1e-12, 1))
    ce_teacher = -np.log(np.clip(np.asarray(p_teacher, dtype=np.float64), 1e-12, 1))
    return 1 - np.exp(-ce_student / (ce_teacher + 1e-7))


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
