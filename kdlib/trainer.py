"""The training loop: method-agnostic, resumable, talking only through events.

`fit(config, run_dir, sinks, teacher)` trains `config.student` with `config.method` and emits
RunStarted, StepLogged (every `probes.log_every` steps), EpochEnded (scalars and per-sample
arrays by dataset index), CheckpointSaved (an atomic checkpoint after every epoch) and RunEnded.
A run whose folder holds a checkpoint continues at the epoch after it. The hot loop keeps its
running values on the device and syncs with the host once per logged step. The loop knows the
`Distiller` contract and nothing of any method: the teacher's logits, the gradient probe and the
recording are the same for all of them.
"""

from __future__ import annotations

import math
import os
import random
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from kdlib.checkpoints import Checkpointer, load_checkpoint, save_atomic, save_route_checkpoint
from kdlib.config import RunConfig
from kdlib.data import DataBundle, load_data
from kdlib.data.base import TensorSplit, first_samples
from kdlib.distributed import SINGLE, Processes
from kdlib.events import CheckpointSaved, EpochEnded, ParamsChanged, RunEnded, RunStarted, Sink, StepLogged
from kdlib.methods import METHODS, MethodContext, TeacherRoute
from kdlib.models import build_model
from kdlib.optim import amp_settings, lr_factor, make_lr_scheduler, make_optimizer
from kdlib.probes import RouteProbe
from kdlib.recording import ColumnTable, GradientProbe, NonFiniteLoss, epoch_record, logged_loss
from kdlib.schedules import value_after
from kdlib.teacher_cache import attach_teacher
from kdlib.tuning import apply_changes, lr_change_steps

__all__ = ["Control", "NonFiniteLoss", "StopRequested", "fit", "load_checkpoint", "resolve_device"]


class StopRequested(Exception):
    """The user asked the run to stop; it ends as `stopped` and can be resumed."""


class Control:
    """Pause/stop requests from outside; the default never asks for anything."""

    def poll(self) -> None:
        """Return to keep going, block while paused, raise StopRequested to stop."""

    def changes(self) -> list[dict]:
        """Changes asked of the run since the last call ([{id, path, value}], kdlib.tuning), read after a poll."""
        return []


class SharedControl(Control):
    """The first process's control, obeyed by every process at the same step."""

    def __init__(self, control: Control, processes: Processes) -> None:
        self.control, self.processes, self.pending = control, processes, []

    def poll(self) -> None:
        if not self.processes.active:
            return self.control.poll()
        flags = torch.zeros(2)  # stop, changes asked
        if self.processes.is_main:
            try:
                self.control.poll()  # a pause blocks here, and the others in the broadcast
            except StopRequested:
                flags[0] += 1
            self.pending = self.control.changes()
            flags[1] = float(bool(self.pending))
        flags = self.processes.broadcast(flags.to(_collective_device())).tolist()
        if flags[0]:
            raise StopRequested
        if flags[1]:
            self.pending = self.processes.broadcast_object(self.pending if self.processes.is_main else None)
        return None

    def changes(self) -> list[dict]:
        if not self.processes.active:
            return self.control.changes()
        pending, self.pending = self.pending, []
        return pending


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
        training = Training(config, run_dir, teacher, processes)
        training.run(emit, control, written)
    except StopRequested:
        emit(RunEnded("stopped"))
        return None
    except KeyboardInterrupt:  # Ctrl-C in a foreground run: a stop, resumable from the last checkpoint
        emit(RunEnded("stopped"))
        raise
    except BaseException as error:
        emit(RunEnded("failed", f"{type(error).__name__}: {error}"))
        raise
    emit(RunEnded("done"))
    return training.student


class Training:
    """One run's training: built from its config, then `run` epoch after epoch."""

    def __init__(self, config: RunConfig, run_dir: Path, teacher: TeacherSource, processes: Processes) -> None:
        method = METHODS.get(config.method.name)
        if processes.active and not method.runs_on_several_processes:
            raise ValueError(
                f"method.name: {config.method.name!r} takes optimizer steps of its own beside the student's (a "
                "search, or a teacher it trains) that are not shared across processes yet; run it in one process, "
                "without torchrun"
            )
        self.config, self.run_dir, self.processes = config, run_dir, processes
        self.device = device = processes.device(resolve_device(config.device))
        seed_everything(config.seed)
        self.data = data = load_data(config.data).to(device)
        student = build_model(config.student, data.input_shape, data.num_classes).to(device)
        processes.broadcast_module(student)
        self.memory_format = _memory_format(config, device, student)
        self.student = student = student.to(memory_format=self.memory_format)
        if config.compile:
            student.compile()  # in place: state_dict keys, hooks and feature taps stay as they are
        teacher_model, route = _resolve_teacher(teacher, data, device)
        if teacher_model is not None:
            teacher_model = teacher_model.to(memory_format=_memory_format(config, device, teacher_model))
        teacher_logits, route = attach_teacher(config, teacher, teacher_model, route, data, device)
        context = MethodContext(data.num_classes, len(data.train), config.epochs, device, data.train, route,
                                data.target_train, teacher_logits)
        self.distiller = method(config.method, student, teacher_model, context)
        self.trainable = list(student.parameters()) + self.distiller.extra_parameters()
        self.optimizer = make_optimizer(config.optimizer, self.trainable)
        self.lr_scheduler = make_lr_scheduler(config.lr_schedule, self.optimizer)  # None: kdlib's, set each step
        self.plateau = isinstance(self.lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        if self.plateau and processes.active:
            raise ValueError("lr_schedule.name: ReduceLROnPlateau reads an epoch scalar that only the first process "
                             "works out; use another schedule under torchrun")
        self.steps_per_epoch = math.ceil(len(data.train) / config.batch_size)
        self.lr_at = partial(lr_factor, config.lr_schedule, config.epochs, self.steps_per_epoch)
        amp_dtype, self.needs_scaler = amp_settings(config, device)
        self.autocast = partial(torch.autocast, device.type, dtype=amp_dtype) if amp_dtype else nullcontext
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.needs_scaler)
        # the probe's values are per-sample arrays: without those, not worth its work
        self.probe_gradients = config.probes.grad_stats and config.probes.per_sample
        self.route_epochs = config.output.route.saved_epochs(config.epochs) if config.output.route else []
        self.route_probe = None
        if route is not None and config.probes.route_probe_size and processes.is_main:
            probe_x = first_samples(data.train, config.probes.route_probe_size).to(device)
            self.route_probe = RouteProbe(route, probe_x, self.autocast, run_dir / "route_probe.npz")
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]  # before a checkpoint overwrites them
        self.config_lrs = list(self.base_lrs)  # at config.optimizer.lr; an lr set while it trains scales them
        self.lr_steps = lr_change_steps(config.lr_changes, self.steps_per_epoch)  # {global step: base lr}
        self.checkpoint_path = run_dir / "checkpoint.pt"
        self.start_epoch = self._resume()
        self._share_batches()

    def _resume(self) -> int:
        """The epoch to start at: after the checkpoint's, whose state is restored, or 0."""
        if self.checkpoint_path.exists():
            state = load_checkpoint(self.checkpoint_path, map_location=self.device)
            self.student.load_state_dict(state["student"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scaler.load_state_dict(state["scaler"])
            self.distiller.load_state_dict(state["distiller"])
            if self.lr_scheduler is not None:
                self.lr_scheduler.load_state_dict(state["lr_scheduler"])
            return state["epoch"] + 1
        if 0 in self.route_epochs and self.processes.is_main:
            save_route_checkpoint(self.student, self.run_dir, 0)
        return 0

    def _share_batches(self) -> None:
        """This process's rows in each step's global batch, and its share of that batch (the same every epoch)."""
        train, batch_size, processes = self.data.train, self.config.batch_size, self.processes
        global_sizes = [min(batch_size, len(train) - s) for s in range(0, len(train), batch_size)]
        own_sizes = [processes.shard_size(n) for n in global_sizes]
        self.shard_sizes = torch.tensor(own_sizes, dtype=torch.float32, device=self.device)
        self.batch_shares = [own / n for own, n in zip(own_sizes, global_sizes, strict=True)]
        # an in-memory split already on the device yields batches there: no `.to` calls every step
        self.batches_move = not (isinstance(train, TensorSplit) and self.memory_format is torch.contiguous_format
                                 and _on(train.y, self.device))

    def run(self, emit, control: Control, written) -> None:
        config, data = self.config, self.data
        emit(RunStarted(config.epochs, self.start_epoch, self.steps_per_epoch, str(self.device), len(data.train)))
        def log_preparation(search_step: int, values: dict[str, float]) -> None:
            emit(StepLogged(-1, search_step, values))
            control.poll()  # a long preparation (DFA's search) obeys pause and stop like the epochs

        self.distiller.prepare(log_preparation)
        checkpointer = Checkpointer(lambda epoch: emit(CheckpointSaved(epoch, str(self.checkpoint_path))), written)
        self.generator, self.step, self.lr_set = torch.Generator(), self.start_epoch * self.steps_per_epoch, None
        if (lr := value_after(config.lr_changes, self.start_epoch, 0)) is not None:
            self._rebase_lr(lr)  # a resumed run goes on with the base lr its changes left
        self._take_changes(control, emit, self.start_epoch, 0)  # asked while it waited (for its teacher, say)
        try:
            for epoch in range(self.start_epoch, config.epochs):
                per_step, per_sample, probe = self._train_epoch(epoch, emit, control)
                self._end_epoch(epoch, per_step, per_sample, probe, emit, checkpointer)
                control.poll()
                self._take_changes(control, emit, epoch + 1, 0)
        finally:
            checkpointer.close()
        if self.processes.is_main:
            save_atomic(self.student.state_dict(), self.run_dir / "model.pt")

    def _train_epoch(self, epoch: int, emit, control: Control) -> tuple[ColumnTable, ColumnTable, GradientProbe]:
        config, processes, optimizer, scaler = self.config, self.processes, self.optimizer, self.scaler
        # Batch order and dropout depend on (seed, epoch) only, so a resumed epoch replays exactly.
        self.generator.manual_seed(config.seed * 1_000_003 + epoch)
        seed_torch(config.seed * 1_000_003 + epoch, self.device)
        self.distiller.epoch_step = 0
        self.distiller.on_epoch_start(epoch)
        self.student.train()
        # Each step's values are kept by reference and gathered into device tensors when read: no host sync.
        per_step = ColumnTable(self.steps_per_epoch, self.device)
        per_sample = ColumnTable(len(self.data.train), self.device)
        probe = GradientProbe(len(self.data.train), self.device)
        logged, log_every = 0, config.probes.log_every
        own_rows = self.data.train.batches(
            config.batch_size, shuffle=True, generator=self.generator, part=(processes.rank, processes.world)
        )
        for i, batch in enumerate(own_rows):
            if self.batches_move:
                batch = batch.to(self.device, non_blocking=True, memory_format=self.memory_format)
            self.distiller.epoch_step = i  # where a param tuned while it trains takes its new value
            if self.lr_steps and self.step in self.lr_steps:
                self._rebase_lr(self.lr_steps[self.step])
            if self.lr_scheduler is None and (factor := self.lr_at(self.step)) != self.lr_set:
                for group, base_lr in zip(optimizer.param_groups, self.base_lrs, strict=True):
                    group["lr"] = base_lr * factor
                self.lr_set = factor
            if len(batch):  # empty only where a last global batch is smaller than the number of processes
                with self.autocast():
                    out = self.distiller.forward(batch)
                watched = probe.watch(out.logits) if self.probe_gradients else None
                optimizer.zero_grad(set_to_none=True)
                (scaler.scale(out.loss) if self.needs_scaler else out.loss).backward()
                # get_scale() syncs with the host: only under fp16 with the probe on
                probe.read(watched, batch.index, scaler.get_scale() if self.needs_scaler and watched is not None else 1.0)
            else:
                optimizer.zero_grad(set_to_none=True)
            if processes.active:
                processes.share_gradients(self.trainable, self.batch_shares[i])
            self._optimizer_step()
            if self.lr_scheduler is not None and self.config.lr_schedule.interval == "step":
                self.lr_scheduler.step()
            if len(batch):
                per_step.write(i, {"loss": out.loss, **out.terms})
                per_sample.write(batch.index, out.per_sample)  # whatever the probes: epoch terms may come from them
            self.step += 1
            if self.step % log_every == 0:
                window = logged_loss(per_step.column("loss"), self.shard_sizes, logged, i, processes, epoch,
                                     self.steps_per_epoch, config)
                emit(StepLogged(epoch, self.step, {"train.loss": window, "lr": optimizer.param_groups[0]["lr"]}))
                logged = i + 1
                control.poll()
                self._take_changes(control, emit, epoch, i + 1)
                if self.route_probe is not None:
                    self.route_probe.prepare()  # once the first point is out: the route takes a while to load
        if logged < self.steps_per_epoch:
            logged_loss(per_step.column("loss"), self.shard_sizes, logged, self.steps_per_epoch - 1, processes,
                        epoch, self.steps_per_epoch, config)
        return per_step, per_sample, probe

    def _take_changes(self, control: Control, emit, epoch: int, step: int) -> None:
        """Apply the changes asked of the run (kdlib.tuning) from step `step` of `epoch` on, and say so.

        They go into the config, where a replayed epoch finds them at the same step: a tuned param's
        schedule (which the distiller reads at every step) and `lr_changes` (read at every step here)."""
        if step >= self.steps_per_epoch:
            epoch, step = epoch + 1, 0
        if epoch >= self.config.epochs:
            return  # nothing left to change: the store drops what is still asked once the run is done
        requests = control.changes()
        if not requests:
            return
        values = {r["path"]: float(r["value"]) for r in requests}  # a later request for a field wins
        apply_changes(self.config, values, epoch, step)
        self.lr_steps = lr_change_steps(self.config.lr_changes, self.steps_per_epoch)
        emit(ParamsChanged(epoch, epoch * self.steps_per_epoch + step, step, values, tuple(r["id"] for r in requests)))

    def _rebase_lr(self, lr: float) -> None:
        """From this step on, `lr` is the base learning rate that kdlib's lr schedule scales."""
        self.base_lrs = [base * lr / self.config.optimizer.lr for base in self.config_lrs]
        self.lr_set = None  # set the groups' lr at this step

    def _optimizer_step(self) -> None:
        if self.config.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"], self.config.grad_clip)
        if self.needs_scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:  # what a disabled GradScaler would do, without its calls every step
            self.optimizer.step()

    def _end_epoch(self, epoch: int, per_step: ColumnTable, per_sample: ColumnTable, probe: GradientProbe, emit,
                   checkpointer: Checkpointer) -> None:
        """Merge the epoch's values across processes; on the first one, record and checkpoint it."""
        processes, data = self.processes, self.data
        per_step_columns = per_step.columns()
        # each term's mean over the epoch's samples: steps weighted by their sizes, summed over processes
        terms = processes.sum(torch.stack(list(per_step_columns.values())).nan_to_num() @ self.shard_sizes)
        terms = terms / len(data.train)
        per_sample.merge(processes)
        probe.merge(processes)
        self.distiller.merge_across_processes(processes)
        processes.broadcast_module(self.student, buffers_only=True)  # rank 0's BatchNorm statistics everywhere
        if not processes.is_main:
            self._epoch_scheduler_step({})
            return
        train_terms = dict(zip((f"train.{k}" for k in per_step_columns), terms.tolist(), strict=True))
        values = per_sample.columns() | probe.per_sample(data.train.targets)
        scalars, arrays = epoch_record(self.config, data, self.student, self.distiller, values, self.autocast,
                                       self.device, epoch, self.route_probe)
        scalars = train_terms | scalars | {"lr": self.optimizer.param_groups[0]["lr"]}
        emit(EpochEnded(epoch, self.step, scalars, arrays))
        self._epoch_scheduler_step(scalars)  # after the epoch's record (its lr), before its checkpoint
        if epoch + 1 in self.route_epochs:
            save_route_checkpoint(self.student, self.run_dir, epoch + 1)
        state = {
            "epoch": epoch,
            "student": self.student.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "distiller": self.distiller.state_dict(),
        }
        if self.lr_scheduler is not None:
            state["lr_scheduler"] = self.lr_scheduler.state_dict()
        checkpointer.save(epoch, state, self.checkpoint_path)

    def _epoch_scheduler_step(self, scalars: dict[str, float]) -> None:
        """A torch scheduler that steps per epoch; ReduceLROnPlateau with the epoch scalar it watches."""
        if self.lr_scheduler is None or self.config.lr_schedule.interval != "epoch":
            return
        if not self.plateau:
            self.lr_scheduler.step()
            return
        monitor = self.config.lr_schedule.monitor
        if monitor not in scalars:
            raise ValueError(f"lr_schedule.monitor: {monitor!r} is not an epoch scalar of this run; it has "
                             f"{', '.join(sorted(scalars))}")
        self.lr_scheduler.step(scalars[monitor])


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

        def load(epoch: int) -> nn.Module:
            # a model built to take a checkpoint's weights draws no numbers from the run's generators: where and
            # when a route is loaded (the probe's first use, RCO's next anchor, a resume) changes no result
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                return artifact.build_route(data, epoch).to(device).eval().requires_grad_(False)

        route = TeacherRoute(list(artifact.route_epochs), load)
    return artifact.build(data).to(device).eval().requires_grad_(False), route
