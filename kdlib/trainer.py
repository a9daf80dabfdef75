"""The training loop: one function, method-agnostic, resumable, talking only through events.

`fit(config, run_dir, sinks, teacher)` trains `config.student` with `config.method` and emits
RunStarted, StepLogged (every `probes.log_every` steps), EpochEnded (scalars and per-sample
arrays by dataset index), CheckpointSaved (an atomic checkpoint after every epoch) and RunEnded.
A run whose folder holds a checkpoint continues at the epoch after it. The hot loop keeps its
running values on the device and syncs with the host once per logged step.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from kdlib.config import LRScheduleSection, OptimizerSection, RunConfig
from kdlib.data import DataBundle, load_data
from kdlib.data.base import TensorSplit
from kdlib.distributed import SINGLE, Processes
from kdlib.events import CheckpointSaved, EpochEnded, RunEnded, RunStarted, Sink, StepLogged
from kdlib.methods import METHODS, MethodContext, TeacherRoute
from kdlib.models import build_model
from kdlib.probes import RouteProbe, evaluate, first_samples, logit_gradient_stats, predict_splits
from kdlib.teacher_cache import attach_teacher_cache


class StopRequested(Exception):
    """The user asked the run to stop; it ends as `stopped` and can be resumed."""


class NonFiniteLoss(RuntimeError):
    pass


class Control:
    """Pause/stop requests from outside; the default never asks for anything."""

    def poll(self) -> None:
        """Return to keep going, block while paused, raise StopRequested to stop."""


class SharedControl(Control):
    """The first process's control, obeyed by every process at the same step."""

    def __init__(self, control: Control, processes: Processes) -> None:
        self.control, self.processes = control, processes

    def poll(self) -> None:
        if not self.processes.active:
            return self.control.poll()
        stop = torch.zeros(1)
        if self.processes.is_main:
            try:
                self.control.poll()  # a pause blocks here, and the others in the broadcast
            except StopRequested:
                stop += 1
        if self.processes.broadcast(stop.to(_collective_device())).item():
            raise StopRequested
        return None


def _collective_device() -> torch.device:
    """NCCL exchanges CUDA tensors only."""
    import torch.distributed as torch_dist

    return torch.device("cuda") if torch_dist.get_backend() == "nccl" else torch.device("cpu")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was asked for but no CUDA GPU is visible; use device: auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device: 'mps' was asked for but Apple MPS is not available; use device: auto or cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_torch(seed: int, device: torch.device) -> None:
    """torch.manual_seed for the generators a run uses: the CPU's and its device's.

    torch.manual_seed also queues seeds for every backend not yet started (CUDA, XPU, MTIA), each with
    a formatted stack trace: about a millisecond, which every epoch of a short run would pay.
    """
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)
    elif device.type == "mps":
        torch.mps.manual_seed(seed)


def make_optimizer(section: OptimizerSection, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if section.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=section.lr,
            momentum=section.momentum,
            nesterov=section.nesterov,
            weight_decay=section.weight_decay,
        )
    kind = torch.optim.Adam if section.name == "adam" else torch.optim.AdamW
    return kind(params, lr=section.lr, weight_decay=section.weight_decay)


def lr_factor(section: LRScheduleSection, epochs: int, steps_per_epoch: int, step: int) -> float:
    """The share of the base learning rate at a global step (warm-up, then the decay)."""
    epoch = step / steps_per_epoch
    if section.warmup_epochs and epoch < section.warmup_epochs:
        return (step + 1) / (section.warmup_epochs * steps_per_epoch)
    if section.name == "cosine":
        span = max(epochs - section.warmup_epochs, 1e-8)
        s = min(max((epoch - section.warmup_epochs) / span, 0.0), 1.0)
        return section.min_lr_ratio + (1 - section.min_lr_ratio) * (1 + math.cos(math.pi * s)) / 2
    if section.name == "step":
        return section.gamma ** sum(epoch >= m for m in section.milestones)
    return 1.0


def amp_settings(config: RunConfig, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, whether a grad scaler is needed): bf16 where supported, else fp16."""
    if not config.amp or device.type != "cuda":
        return None, False
    return (torch.bfloat16, False) if torch.cuda.is_bf16_supported() else (torch.float16, True)


def save_atomic(obj: object, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class TeacherArtifactLike(Protocol):
    """What `kdlib.teachers.TeacherArtifact` offers: the model and its route, built once the data is known."""

    route_epochs: list[int]

    def build(self, data: DataBundle) -> nn.Module: ...

    def build_route(self, data: DataBundle, epoch: int) -> nn.Module: ...

    def outputs_file(self, key: dict, epoch: int | None = None) -> Path: ...


TeacherSource = nn.Module | TeacherArtifactLike | None


def fit(
    config: RunConfig,
    run_dir: str | os.PathLike,
    sinks: list[Sink],
    teacher: TeacherSource = None,
    control: Control | None = None,
    processes: Processes = SINGLE,
) -> nn.Module | None:
    """Train the run's student; returns it (None if stopped). Failures are emitted as RunEnded, then raised.

    `teacher` is a model, or an artifact that builds it (and its route) once the data is known.
    `processes`: this process's place among several training the run together (`kdlib.distributed`);
    only the first one's sinks and control are used.
    """
    run_dir, control = Path(run_dir), SharedControl(control or Control(), processes)
    run_dir.mkdir(parents=True, exist_ok=True)

    def emit(event) -> None:
        for sink in sinks:
            sink.emit(event)

    def written() -> None:  # sinks that write in the background (the store) have a flush
        for sink in sinks:
            getattr(sink, "flush", lambda: None)()

    try:
        student = _train(config, run_dir, emit, teacher, control, processes, written)
    except StopRequested:
        emit(RunEnded("stopped"))
        return None
    except BaseException as error:
        emit(RunEnded("failed", f"{type(error).__name__}: {error}"))
        raise
    emit(RunEnded("done"))
    return student


class Checkpointer:
    """Atomic checkpoints written by a background thread, so saving overlaps the next epoch.

    The state is packed first (`pack_state`: a copy), so training that goes on cannot change what is
    being written.
    `on_saved(epoch)` is called from the training thread once a checkpoint is on disk: when the
    next one is asked for, or at `close()`. `before_save()` runs first in the writing thread: the
    sinks finish recording the epoch, so a run killed at any moment resumes with nothing missing.
    """

    def __init__(self, on_saved: Callable[[int], None], before_save: Callable[[], None] = lambda: None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kdlib-checkpoint")
        self._pending: tuple[int, Future] | None = None
        self._on_saved, self._before_save = on_saved, before_save

    def save(self, epoch: int, state: dict, path: Path) -> None:
        self.wait()
        self._pending = (epoch, self._pool.submit(self._save, pack_state(state), path))

    def _save(self, state: dict, path: Path) -> None:
        self._before_save()
        save_atomic(state, path)

    def wait(self) -> None:
        if self._pending is not None:
            epoch, future = self._pending
            self._pending = None
            future.result()
            self._on_saved(epoch)

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown()


_PACKED, _TENSOR = "kdlib_packed_state", "__kdlib_tensor__"


def pack_state(state: dict) -> dict:
    """A copy of a checkpoint's state with every tensor in one flat buffer per dtype and device.

    torch.save pays per tensor and per pickled object: packed, a small CNN's state with Adam's (38
    tensors) is copied and saved 1.9x faster, an MLP's (16) 1.2x (`bench/checkpoint.py`). Each tensor
    is replaced by (marker, buffer, offset, shape); `load_checkpoint` rebuilds them as views. Plain
    containers only, so the file still loads with torch.load(weights_only=True).
    """
    parts: dict[str, list[torch.Tensor]] = {}
    sizes: dict[str, int] = {}

    def walk(value):
        if isinstance(value, torch.Tensor):
            key = f"{value.dtype}@{value.device}".removeprefix("torch.")
            offset = sizes.get(key, 0)
            parts.setdefault(key, []).append(value.detach().reshape(-1))
            sizes[key] = offset + value.numel()
            return (_TENSOR, key, offset, tuple(value.shape))
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(walk(v) for v in value)
        return value

    skeleton = walk(state)
    return {_PACKED: 1, "state": skeleton, "buffers": {key: torch.cat(tensors) for key, tensors in parts.items()}}


def unpack_state(saved: dict) -> dict:
    """The state that `pack_state` packed (tensors are views into its buffers); any other dict as it is."""
    if not (isinstance(saved, dict) and saved.get(_PACKED)):
        return saved  # a checkpoint written before states were packed
    buffers = saved["buffers"]

    def walk(value):
        if isinstance(value, tuple) and len(value) == 4 and value[0] == _TENSOR:
            _, key, offset, shape = value
            return buffers[key][offset : offset + math.prod(shape)].view(shape)
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(walk(v) for v in value)
        return value

    return walk(saved["state"])


def load_checkpoint(path: str | os.PathLike, map_location: torch.device | str = "cpu") -> dict:
    """A run's `checkpoint.pt`: epoch, student, optimizer, scaler and distiller states."""
    return unpack_state(torch.load(path, map_location=map_location, weights_only=True))


def _train(
    config: RunConfig,
    run_dir: Path,
    emit,
    teacher: TeacherSource,
    control: Control,
    processes: Processes,
    written: Callable[[], None],
) -> nn.Module:
    if processes.active and not METHODS.get(config.method.name).runs_on_several_processes:
        raise ValueError(
            f"method.name: {config.method.name!r} takes optimizer steps of its own beside the student's (a search, "
            "or a teacher it trains) that are not shared across processes yet; run it in one process, without torchrun"
        )
    device = processes.device(resolve_device(config.device))
    seed_everything(config.seed)
    data = load_data(config.data).to(device)
    student = build_model(config.student, data.input_shape, data.num_classes).to(device)
    processes.broadcast_module(student)
    memory_format = _memory_format(config, device, student)
    student = student.to(memory_format=memory_format)
    if config.compile:
        student.compile()  # in place: state_dict keys, hooks and feature taps stay as they are
    source = teacher  # the artifact (or module): where the teacher-output cache is kept
    teacher, route = _resolve_teacher(teacher, data, device)
    if teacher is not None:
        teacher = teacher.to(memory_format=_memory_format(config, device, teacher))
    teacher_outputs, route = attach_teacher_cache(config, source, teacher, route, data, device)
    steps_per_epoch = math.ceil(len(data.train) / config.batch_size)
    context = MethodContext(data.num_classes, len(data.train), config.epochs, device, data.train, route,
                            data.target_train, teacher_outputs)
    distiller = METHODS.get(config.method.name)(config.method, student, teacher, context)
    # the probe's values are per-sample arrays: without those, not worth its work
    distiller.watch_gradients = config.probes.grad_stats and config.probes.per_sample
    trainable = list(student.parameters()) + distiller.extra_parameters()
    optimizer = make_optimizer(config.optimizer, trainable)
    lr_at = partial(lr_factor, config.lr_schedule, config.epochs, steps_per_epoch)
    amp_dtype, needs_scaler = amp_settings(config, device)
    autocast = partial(torch.autocast, device.type, dtype=amp_dtype) if amp_dtype else nullcontext
    scaler = torch.amp.GradScaler(device.type, enabled=needs_scaler)
    route_epochs = config.output.route.saved_epochs(config.epochs) if config.output.route else []

    base_lrs = [group["lr"] for group in optimizer.param_groups]  # before a checkpoint overwrites them
    checkpoint_path, start_epoch = run_dir / "checkpoint.pt", 0
    if checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path, map_location=device)
        student.load_state_dict(state["student"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        distiller.load_state_dict(state["distiller"])
        start_epoch = state["epoch"] + 1
    elif 0 in route_epochs and processes.is_main:
        _save_route(student, run_dir, 0)

    route_probe = None
    if route is not None and config.probes.route_probe_size and processes.is_main:
        route_probe = RouteProbe(route, first_samples(data.train, config.probes.route_probe_size).to(device), autocast)
        route_probe.save(run_dir / "route_probe.npz")
    emit(RunStarted(config.epochs, start_epoch, steps_per_epoch, str(device), len(data.train)))
    distiller.prepare(lambda search_step, values: emit(StepLogged(-1, search_step, values)))
    generator = torch.Generator()
    checkpointer = Checkpointer(lambda epoch: emit(CheckpointSaved(epoch, str(checkpoint_path))), written)
    log_every, step = config.probes.log_every, start_epoch * steps_per_epoch
    # this process's rows in each step's global batch, and its share of that batch (the same every epoch)
    global_sizes = [min(config.batch_size, len(data.train) - s) for s in range(0, len(data.train), config.batch_size)]
    own_sizes = [processes.shard_size(n) for n in global_sizes]
    shard_sizes = torch.tensor(own_sizes, dtype=torch.float32, device=device)
    batch_shares = [own / n for own, n in zip(own_sizes, global_sizes, strict=True)]
    lr_set = None  # the factor of the base learning rates last set (a constant schedule sets them once)
    # an in-memory split already on the device yields batches there: no `.to` calls every step
    batches_move = not (isinstance(data.train, TensorSplit) and memory_format is torch.contiguous_format
                        and _on(data.train.y, device))
    try:
        for epoch in range(start_epoch, config.epochs):
            # Batch order and dropout depend on (seed, epoch) only, so a resumed epoch replays exactly.
            generator.manual_seed(config.seed * 1_000_003 + epoch)
            seed_torch(config.seed * 1_000_003 + epoch, device)
            distiller.on_epoch_start(epoch)
            student.train()
            # Each step's values are kept by reference and gathered into device tensors when read: no host sync.
            per_step = ColumnTable(steps_per_epoch, device)
            # the method's per-sample values, and the gradient probe's logits and gradients [N, K]
            per_sample = ColumnTable(len(data.train), device)
            logged = 0
            own_rows = data.train.batches(
                config.batch_size, shuffle=True, generator=generator, part=(processes.rank, processes.world)
            )
            for i, batch in enumerate(own_rows):
                if batches_move:
                    batch = batch.to(device, non_blocking=True, memory_format=memory_format)
                if (factor := lr_at(step)) != lr_set:
                    for group, base_lr in zip(optimizer.param_groups, base_lrs, strict=True):
                        group["lr"] = base_lr * factor
                    lr_set = factor
                if len(batch):  # empty only where a last global batch is smaller than the number of processes
                    with autocast():
                        out = distiller.forward(batch)
                    optimizer.zero_grad(set_to_none=True)
                    (scaler.scale(out.loss) if needs_scaler else out.loss).backward()
                    # the scale as a device tensor: get_scale() would sync with the host every step under fp16
                    loss_scale = scaler._get_scale_async() if needs_scaler else 1.0
                    watched = distiller.watched_logit_gradient(batch, loss_scale)
                else:
                    optimizer.zero_grad(set_to_none=True)
                if processes.active:
                    processes.share_gradients(trainable, batch_shares[i])
                if config.grad_clip:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(optimizer.param_groups[0]["params"], config.grad_clip)
                if needs_scaler:
                    scaler.step(optimizer)
                    scaler.update()
                else:  # what a disabled GradScaler would do, without its calls every step
                    optimizer.step()

                if len(batch):
                    per_step.write(i, {"loss": out.loss, **out.terms})
                    rows = out.per_sample  # written whatever the probes: a method's epoch terms may come from them
                    if watched is not None:
                        rows = {**rows, _WATCHED_LOGITS: watched[0], _WATCHED_GRAD: watched[1]}
                    per_sample.write(batch.index, rows)
                step += 1
                if step % log_every == 0:
                    window = _logged_loss(per_step.column("loss"), shard_sizes, logged, i, processes, epoch,
                                          steps_per_epoch, config)
                    emit(StepLogged(epoch, step, {"train.loss": window, "lr": optimizer.param_groups[0]["lr"]}))
                    logged = i + 1
                    control.poll()

            per_step_columns = per_step.columns()
            if logged < steps_per_epoch:
                _logged_loss(per_step_columns["loss"], shard_sizes, logged, steps_per_epoch - 1, processes, epoch,
                             steps_per_epoch, config)
            # each term's mean over the epoch's samples: steps weighted by their sizes, summed over processes
            terms = processes.sum(torch.stack(list(per_step_columns.values())).nan_to_num() @ shard_sizes) / len(data.train)
            per_sample.merge(processes)
            distiller.merge_across_processes(processes)
            processes.broadcast_module(student, buffers_only=True)  # rank 0's BatchNorm statistics everywhere
            if not processes.is_main:
                control.poll()
                continue
            per_sample_columns = per_sample.columns()
            watched_rows = [per_sample_columns.pop(key, None) for key in (_WATCHED_LOGITS, _WATCHED_GRAD)]
            per_sample_columns, epoch_terms = distiller.finish_per_sample(per_sample_columns, data.train.targets)
            if epoch_terms:
                terms = torch.cat([terms, torch.stack(list(epoch_terms.values()))])
            train_terms = dict(zip((f"train.{k}" for k in (*per_step_columns, *epoch_terms)), terms.tolist(),
                                   strict=True))
            if watched_rows[0] is not None:
                per_sample_columns |= logit_gradient_stats(*watched_rows, data.train.targets)
            scalars, arrays = _epoch_summary(
                config, data, student, distiller, per_sample_columns, autocast, device, epoch, route_probe
            )
            scalars = train_terms | scalars | {"lr": optimizer.param_groups[0]["lr"]}
            emit(EpochEnded(epoch, step, scalars, arrays))
            if epoch + 1 in route_epochs:
                _save_route(student, run_dir, epoch + 1)
            state = {
                "epoch": epoch,
                "student": student.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "distiller": distiller.state_dict(),
            }
            checkpointer.save(epoch, state, checkpoint_path)
            control.poll()
    finally:
        checkpointer.close()
    if processes.is_main:
        save_atomic(student.state_dict(), run_dir / "model.pt")
    return student


def _on(tensor: torch.Tensor, device: torch.device) -> bool:
    """Whether a tensor is on the device (`cuda` means the current one, as `.to("cuda")` does)."""
    if tensor.device.type != device.type:
        return False
    if device.index is None and device.type == "cuda":
        return tensor.device.index == torch.cuda.current_device()
    return device.index in (None, tensor.device.index)


def _memory_format(config: RunConfig, device: torch.device, model: nn.Module) -> torch.memory_format:
    """channels_last where it pays: 2-D convolutions on CUDA (tensor cores read NHWC without transposes)."""
    has_conv2d = any(isinstance(m, nn.Conv2d) for m in model.modules())
    if config.channels_last and device.type == "cuda" and has_conv2d:
        return torch.channels_last
    return torch.contiguous_format


def _resolve_teacher(teacher: TeacherSource, data: DataBundle, device: torch.device):
    """The frozen teacher on the device, and its route when the artifact has one."""
    if teacher is None:
        return None, None
    if isinstance(teacher, nn.Module):
        return teacher.to(device).eval().requires_grad_(False), None
    artifact = teacher
    route = None
    if artifact.route_epochs:
        route = TeacherRoute(
            list(artifact.route_epochs),
            lambda epoch: artifact.build_route(data, epoch).to(device).eval().requires_grad_(False),
        )
    return artifact.build(data).to(device).eval().requires_grad_(False), route


class ColumnTable:
    """Values written a batch (or a step) at a time, gathered into device tensors [rows, ...] when read.

    A write only keeps references to the step's tensors (detached); reading (or every `GATHER_EVERY`
    writes, or once `GATHER_ELEMENTS` values wait) concatenates each key's values and puts them into
    their rows in one indexed write. So a step costs no tensor operation here, and no host sync.
    Rows never written stay NaN. A written tensor must not be changed in place afterwards (methods
    hand over fresh tensors every step).
    """

    GATHER_EVERY = 256  # writes kept before they are gathered: bounds the number of small tensors held
    GATHER_ELEMENTS = 1 << 22  # and the memory they hold (16 MiB of float32), e.g. [B, 1000] logits

    def __init__(self, rows: int, device: torch.device) -> None:
        self.rows, self.device = rows, device
        self._tables: dict[str, torch.Tensor] = {}
        self._pending: list[tuple[int | torch.Tensor, dict[str, torch.Tensor]]] = []  # writes not yet in the tables
        self._waiting = 0  # values they hold

    def write(self, where: int | torch.Tensor, values: dict[str, torch.Tensor]) -> None:
        """Keep a step's values for their rows (`where`: a row number, or the batch's dataset indices;
        a single value for a batch is given to each of its rows)."""
        per_row, elements = not isinstance(where, int), 0
        for value in values.values():
            if value.requires_grad or (per_row and value.dim() == 0):
                values = {key: self._kept(value, where) for key, value in values.items()}
                break
            elements += value.numel()
        else:
            self._pending.append((where, values))
            self._waiting += elements
            if len(self._pending) >= self.GATHER_EVERY or self._waiting > self.GATHER_ELEMENTS:
                self._gather()
            return
        self.write(where, values)

    @staticmethod
    def _kept(value: torch.Tensor, where: int | torch.Tensor) -> torch.Tensor:
        value = value.detach()  # no autograd graph outlives its step
        if not isinstance(where, int) and value.dim() == 0:
            value = value.expand(where.shape[0])
        return value

    def _gather(self) -> None:
        by_key: dict[str, tuple[list, list]] = {}
        for where, values in self._pending:
            for key, value in values.items():
                wheres, kept = by_key.setdefault(key, ([], []))
                wheres.append(where)
                kept.append(value)
        for key, (wheres, values) in by_key.items():
            if isinstance(wheres[0], int):  # one row per write: a step's scalars
                stacked = torch.stack(values).float()
                index = _rows(wheres, self.device)
            else:
                stacked = torch.cat(values).float()
                index = torch.cat(wheres)
            if key not in self._tables:
                self._tables[key] = torch.full((self.rows, *stacked.shape[1:]), float("nan"), device=self.device)
            self._tables[key][index] = stacked
        self._pending.clear()
        self._waiting = 0

    def merge(self, processes: Processes) -> None:
        """Every process's rows in every process's table (its own samples were written by each)."""
        self._gather()
        for table in self._tables.values():
            processes.merge_rows(table)

    def column(self, key: str) -> torch.Tensor:
        """The key's [rows] (or [rows, ...]) values; all NaN where nothing was written (yet)."""
        self._gather()
        if key not in self._tables:
            return torch.full((self.rows,), float("nan"), device=self.device)
        return self._tables[key]

    def columns(self) -> dict[str, torch.Tensor]:
        self._gather()
        return dict(self._tables)


def _rows(numbers: list[int], device: torch.device) -> slice | torch.Tensor:
    """Row numbers as a slice when they follow each other (no index tensor to copy to the device)."""
    if numbers == list(range(numbers[0], numbers[0] + len(numbers))):
        return slice(numbers[0], numbers[0] + len(numbers))
    return torch.tensor(numbers, device=device)


def _epoch_summary(config, data, student, distiller, per_sample, autocast, device, epoch, route_probe):
    """The epoch's scalars (coefficients, evaluation) and per-sample arrays."""
    scalars = distiller.coefficients()
    arrays_from_method = distiller.epoch_arrays()
    arrays = {}
    if config.probes.per_sample:
        arrays = {f"train.{k}": v.cpu().numpy() for k, v in per_sample.items()}
        arrays["train.label"] = data.train.targets.cpu().numpy()
    with_probs = config.probes.probs_every and (
        (epoch + 1) % config.probes.probs_every == 0 or epoch + 1 == config.epochs
    )
    splits = [getattr(data, split_name) for split_name in config.probes.eval_splits]
    predicted = predict_splits(student, splits, config.batch_size, device, autocast)
    for split_name, split, logits in zip(config.probes.eval_splits, splits, predicted, strict=True):
        split_scalars, split_arrays = evaluate(logits, split.targets, config.probes.ece_bins, bool(with_probs))
        scalars |= {f"{split_name}.{k}": v for k, v in split_scalars.items()}
        if config.probes.per_sample and split_name != "train":
            split_arrays["label"] = split.targets.cpu().numpy()
            arrays |= {f"{split_name}.{k}": v for k, v in split_arrays.items()}
    arrays |= arrays_from_method
    if route_probe is not None:
        route_scalars, arrays["probe.probs"] = route_probe.measure(student)
        scalars |= route_scalars
    return scalars, arrays


def _save_route(model: nn.Module, run_dir: Path, epoch: int) -> None:
    (run_dir / "route").mkdir(exist_ok=True)
    save_atomic(model.state_dict(), run_dir / "route" / f"epoch_{epoch:04d}.pt")


_WATCHED_LOGITS, _WATCHED_GRAD = "_watched.logits", "_watched.grad"  # the gradient probe's rows in `per_sample`


def _logged_loss(losses, shard_sizes, first: int, last: int, processes: Processes, epoch: int,
                 steps_per_epoch: int, config: RunConfig) -> float:
    """The mean loss per sample of steps first..last over all processes; raises at a NaN or infinite loss.

    One host sync. A NaN or infinite loss in any process makes the summed loss non-finite in every
    process, so all stop at the same step.
    """
    sizes = shard_sizes[first : last + 1]
    window = torch.where(sizes > 0, losses[first : last + 1], 0.0)  # a step with no samples here wrote NaN
    loss_sum, count = processes.sum(torch.stack([(window * sizes).sum(), sizes.sum()])).tolist()
    if not math.isfinite(loss_sum):
        _check_finite(window, first, epoch, steps_per_epoch, config)
        raise NonFiniteLoss(f"the loss became NaN or infinite in another process in epoch {epoch}")
    return loss_sum / max(count, 1.0)


def _check_finite(losses: torch.Tensor, first: int, epoch: int, steps_per_epoch: int, config: RunConfig) -> None:
    """Raise with the first step whose loss is NaN or infinite (`losses` of steps first, first + 1, ...)."""
    bad = (~torch.isfinite(losses)).nonzero()
    if len(bad) == 0:
        return
    hints = [f"lower optimizer.lr (now {config.optimizer.lr})"]
    if "temperature" in type(config.method).model_fields:
        hints.append("check method.temperature (a very small T makes the soft term explode)")
    if config.grad_clip is None:
        hints.append("set grad_clip (e.g. 5.0)")
    first += int(bad[0])
    raise NonFiniteLoss(
        f"the loss became NaN or infinite at step {epoch * steps_per_epoch + first} (epoch {epoch}, step "
        f"{first} of {steps_per_epoch}); " + "; ".join(hints)
    )
