"""Teachers as artifacts: trained once per (data, architecture, seed, recipe), then reused.

An artifact is a folder `$KDLIB_HOME/teachers/<hash>/` with `model.pt` (the converged weights),
`route/epoch_XXXX.pt` (the weights after chosen epochs: RCO's anchors and the route views),
`meta.json`, and `outputs/` (the teacher's cached logits on training splits, `kdlib.teacher_cache`). The hash covers everything that changes the weights, nothing else, so every student
run that names the same teacher recipe finds the artifact and skips training. The teacher's own
training is a run in the store (kind `teacher`), so its curves can be watched like any other.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from kdlib.config import ConfigError, OutputSection, RunConfig, stable_hash
from kdlib.data.base import DataBundle
from kdlib.models import build_model
from kdlib.spec import Spec, user_path
from kdlib.trainer import StopRequested


@dataclass
class TeacherArtifact:
    """A teacher's weights and route on disk; `build(data)` makes the model."""

    path: Path
    config: RunConfig  # the teacher's model spec lives in config.teacher.model
    route_epochs: list[int]
    outputs_root: Path | None = None  # a user's checkpoint: where its cached outputs go (not into its folder)

    def _model(self, data: DataBundle, weights: Path) -> nn.Module:
        model = build_model(self.config.teacher.model, data.input_shape, data.num_classes)
        try:
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        except RuntimeError as error:
            raise ConfigError(
                f"teacher.checkpoint: {weights} does not fit teacher.model "
                f"({self.config.teacher.model.name}): {str(error).splitlines()[0]}"
            ) from None
        return model.eval().requires_grad_(False)

    def weights(self, epoch: int | None = None) -> Path:
        """The converged weights' file, or the one saved after `epoch` epochs."""
        if epoch is not None:
            return self.path / "route" / f"epoch_{epoch:04d}.pt"
        return self.path / "model.pt" if self.path.is_dir() else self.path

    def build(self, data: DataBundle) -> nn.Module:
        return self._model(data, self.weights())

    def build_route(self, data: DataBundle, epoch: int) -> nn.Module:
        """The teacher as it was after `epoch` epochs of its training."""
        if epoch not in self.route_epochs:
            raise KeyError(f"the teacher's route has epochs {self.route_epochs}, not {epoch}")
        return self._model(data, self.weights(epoch))

    def outputs_file(self, key: dict, epoch: int | None = None) -> Path:
        """Where the outputs cached under `key` for these weights (final, or after `epoch`) live.

        A trained artifact keeps them inside; a user's checkpoint gets a file under
        `$KDLIB_HOME/teachers/outputs/`, keyed by its weights file (path, size, modification time) too.
        """
        if self.outputs_root is None:
            return self.path / "outputs" / f"{stable_hash(key)}.npy"
        weights = self.weights(epoch).resolve()
        stat = weights.stat()
        identity = {"weights_file": [str(weights), stat.st_size, stat.st_mtime_ns]}
        return self.outputs_root / f"{stable_hash({**key, **identity})}.npy"

    def meta(self) -> dict:
        meta = self.path / "meta.json"
        return json.loads(meta.read_text()) if meta.exists() else {}


def teacher_key(config: RunConfig) -> dict:
    t = config.teacher
    return {
        "data": config.data.model_dump(mode="json"),
        "model": t.model.model_dump(mode="json"),
        "seed": t.seed,
        "recipe": t.model_dump(mode="json", include={"epochs", "batch_size", "optimizer", "lr_schedule", "grad_clip"}),
        "route": t.route.saved_epochs(t.epochs),
    }


def teacher_run_config(config: RunConfig) -> RunConfig:
    """The run that trains the teacher: plain cross-entropy with the teacher's own recipe."""
    t = config.teacher
    return RunConfig(
        imports=config.imports,  # so the teacher run's stored config reads in any process
        data=config.data,
        student=t.model,
        method={"name": "ce"},
        epochs=t.epochs,
        batch_size=t.batch_size,
        optimizer=t.optimizer,
        lr_schedule=t.lr_schedule,
        grad_clip=t.grad_clip,
        seed=t.seed,
        device=config.device,
        amp=config.amp,
        probes=config.probes,
        output=OutputSection(name=f"teacher {t.model.name} on {config.data.name}", route=t.route),
    )


def _route_epochs(folder: Path) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in (folder / "route").glob("epoch_*.pt")) if folder.is_dir() else []


def checkpoint_path(checkpoint: str, home: Path | None) -> Path | None:
    """Where `teacher.checkpoint` points: a weights file, a folder with model.pt, or a run id of the store at
    `home` (that run's folder); None when it is none of them."""
    path = user_path(checkpoint)
    if path.exists():
        return path
    return home / checkpoint if home is not None and (home / checkpoint).is_dir() else None


def checkpoint_problem(checkpoint: str, home: Path | None) -> str | None:
    """Why `teacher.checkpoint` cannot give the teacher's weights, or None."""
    path = checkpoint_path(checkpoint, home)
    if path is None:
        return (f"teacher.checkpoint: {checkpoint} is neither a weights file, a folder with model.pt, nor a run id "
                f"in the store {home}; fix the path, or leave checkpoint out to train the teacher")
    if path.is_dir() and not (path / "model.pt").is_file():
        return (f"teacher.checkpoint: the folder {path} has no model.pt (a run that has not finished, or another "
                "folder); point it at a finished run or a weights file")
    return None


def weights_problem(model: Spec, weights: Path, shape: tuple[int, ...], num_classes: int) -> str | None:
    """Why the weights file cannot be loaded into `model` for samples of `shape` and `num_classes` classes, or
    None; read and matched on the meta device (names and shapes, no memory, no values)."""
    try:
        try:
            state = torch.load(weights, map_location="meta", weights_only=True, mmap=True)
        except RuntimeError:  # a file of torch's legacy format, which mmap cannot read
            state = torch.load(weights, map_location="meta", weights_only=True)
    except Exception as error:  # noqa: BLE001 - whatever torch says of a file that holds no weights
        return (f"teacher.checkpoint: {weights} is not a weights file torch can load ({_first_line(error)}); give "
                "the .pt file of a model's state_dict (torch.save), a finished run's folder, or its id")
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        net = build_model(model, shape, num_classes)
    try:
        net.load_state_dict(state if isinstance(state, dict) else {})
    except RuntimeError as error:
        detail = " ".join(line.strip() for line in str(error).splitlines()[1:3])
        return f"teacher.checkpoint: {weights} does not fit teacher.model ({model.name}): {detail}"
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def saved_route(config: RunConfig, home: Path | None) -> tuple[list[int], str] | None:
    """The teacher's route, known before it trains: the epochs whose weights it keeps (0 is the initialization,
    left out) and where that comes from, for messages; None for a checkpoint that cannot be found."""
    t = config.teacher
    if t.checkpoint is None:
        saved = [e for e in t.route.saved_epochs(t.epochs) if e > 0]
        return saved, f"teacher.route saves epochs {saved} of teacher.epochs: {t.epochs}"
    path = checkpoint_path(t.checkpoint, home)
    if path is None:
        return None
    saved = [e for e in _route_epochs(path) if e > 0]
    if not saved:
        return saved, f"teacher.checkpoint {path} has no route/epoch_XXXX.pt files"
    return saved, f"the route files of teacher.checkpoint {path} hold epochs {saved}"


def obtain_teacher(config: RunConfig, store, train, waiting: Callable[[], None] = lambda: None) -> TeacherArtifact:
    """The artifact for `config.teacher`: loaded from `checkpoint`, found in the cache, or trained now.

    `train(teacher_config, run_id)` runs the teacher's training (the runner passes its executor);
    a file lock makes two runs that need the same new teacher train it once. `waiting()` is called
    while another run trains it (the runner's control poll: the waiting run can be paused or stopped).
    """
    t = config.teacher
    if t.checkpoint:
        if problem := checkpoint_problem(t.checkpoint, store.home):
            raise ConfigError(problem)
        path = checkpoint_path(t.checkpoint, store.home)  # a run id: that run's final weights
        return TeacherArtifact(path, config, _route_epochs(path), store.home / "teachers" / "outputs")

    folder = store.home / "teachers" / stable_hash(teacher_key(config))
    folder.parent.mkdir(exist_ok=True)
    with open(folder.with_suffix(".lock"), "w") as lock:
        while not _locked(lock):
            waiting()
            time.sleep(0.2)
        if not (folder / "model.pt").exists():
            _train_into(folder, teacher_key(config), teacher_run_config(config), store, train)
    return TeacherArtifact(folder, config, _route_epochs(folder))


def _locked(lock) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def unfinished_teacher_run(store, teacher_config: RunConfig) -> str | None:
    """The newest teacher run of this recipe that no process is running and that did not end done:
    one that was stopped (with its student) or killed, which a new training of the recipe continues."""
    wanted = teacher_config.to_yaml()
    runs = store.runs("teacher")
    for run_id in runs.id[runs.status.isin(("stopped", "failed"))]:
        if store.run(run_id)["config"] == wanted:
            return run_id
    return None


def _train_into(folder: Path, key: dict, teacher_config: RunConfig, store, train) -> None:
    run_id = unfinished_teacher_run(store, teacher_config)
    if run_id is None:
        run_id = store.create_run(teacher_config, kind="teacher")
    else:  # continue it from its checkpoint rather than leave it behind and train another
        store.set_process(run_id, status="queued", error=None, ended=None, control="run")
        store.log_event(run_id, "resumed", "continued by a student that needs this teacher")
    train(teacher_config, run_id)
    status = store.run(run_id)["status"]
    if status == "stopped":
        raise StopRequested  # the student was stopped while its teacher trained
    if status != "done":
        raise RuntimeError(f"training the teacher failed (run {run_id}): {store.run(run_id)['error']}")
    run_dir = store.run_dir(run_id)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    shutil.copy2(run_dir / "model.pt", tmp / "model.pt")
    if (run_dir / "route").exists():
        shutil.copytree(run_dir / "route", tmp / "route")
    final = store.epoch_metrics(run_id).iloc[-1].to_dict()
    (tmp / "meta.json").write_text(
        json.dumps(
            {"run_id": run_id, "created": time.time(), "key": key, "final": final},
            indent=1,
        )
    )
    tmp.rename(folder)
