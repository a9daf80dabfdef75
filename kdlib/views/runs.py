"""Runs read back from the store: one run for a notebook, summaries of several runs and of a sweep's
trials for the app, and the models of a run read back from its folder (with their predictions over
a 2-D plane).
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
from kdlib.schedules import as_schedule, is_schedulable, schedule_curve
from kdlib.store import RunStore
from kdlib.store.studies import STUDY_OUTCOMES


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

    def history(self, keys: str | list[str] | None = None, split: str | None = None) -> pd.DataFrame:
        """Every epoch's per-sample values in long format: columns epoch, split, index, key, value.

        Sample 7's weight over the epochs is one line (`keys` and `split` only read less):

            run.history().query("key == 'weight' and index == 7").plot(x="epoch", y="value")

        and every sample's weight, one column per sample:
        `run.history("weight", "train").pivot(index="epoch", columns="index", values="value")`.
        Arrays of several values per sample (`probs`) are left out: `arrays(epoch)` has them.
        """
        return self.store.per_sample_history(self.run_id, keys, split)


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
        if is_schedulable(info):
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

# A study's table and best trial are read from the store alone (`kdlib.store.studies`: the CLI needs no torch).
_TRIAL_COLUMNS = {"trial", "run_id", "name", "state", "value", "status", "metric", "direction", "epochs_done"}


def searched_params(trials: pd.DataFrame) -> list[str]:
    """The searched params (config paths) among a `study_summary`'s columns."""
    return [c for c in trials.columns if c not in _TRIAL_COLUMNS and c not in STUDY_OUTCOMES.values()]


def study_curves(store: RunStore, trials: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each trial's epoch metrics, labelled `trial N` (for `viz.study_curves_figure`)."""
    return {f"trial {t}": store.epoch_metrics(r) for t, r in zip(trials.trial, trials.run_id, strict=True)}


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
