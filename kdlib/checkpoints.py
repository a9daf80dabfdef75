"""Checkpoints: a run's state after every epoch, written atomically in the background; its route.

A checkpoint is a plain `torch.save` of state dicts (epoch, student, optimizer, scaler, distiller),
loadable with `torch.load(weights_only=True)`. It is written beside the old one and renamed over it,
so a run killed at any moment leaves a whole checkpoint (and at worst a `.tmp` that the next save
overwrites); one that fails, on a full disk, leaves none. The write overlaps the next epoch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
from torch import nn


def save_atomic(obj: object, path: Path) -> None:
    """Write `obj` beside `path`, then rename it over: a write that fails (a full disk) leaves no `.tmp`."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike, map_location: torch.device | str = "cpu") -> dict:
    """A run's `checkpoint.pt`: epoch, student, optimizer, scaler and distiller states."""
    return _unpacked(torch.load(path, map_location=map_location, weights_only=True))


def _unpacked(saved: dict) -> dict:
    """A checkpoint as saved; one written by kdlib 0.1 with its tensors packed into one buffer per dtype
    (`{"kdlib_packed_state": 1, "state": ..., "buffers": ...}`, each tensor a (marker, buffer, offset,
    shape) tuple) comes back as plain state, so runs of that version still resume."""
    if not (isinstance(saved, dict) and saved.get("kdlib_packed_state")):
        return saved
    buffers = saved["buffers"]

    def walk(value):
        if isinstance(value, tuple) and len(value) == 4 and value[0] == "__kdlib_tensor__":
            _, key, offset, shape = value
            return buffers[key][offset : offset + math.prod(shape)].view(shape)
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(walk(v) for v in value)
        return value

    return walk(saved["state"])


def detached_copy(state: object) -> object:
    """The state with every tensor copied, so training that goes on cannot change what is being written."""
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return {k: detached_copy(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(detached_copy(v) for v in state)
    return state


class Checkpointer:
    """Atomic checkpoints written by a background thread, so saving overlaps the next epoch.

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
        self._pending = (epoch, self._pool.submit(self._save, detached_copy(state), path))

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


def save_route_checkpoint(model: nn.Module, run_dir: Path, epoch: int) -> None:
    """The model's weights after `epoch` epochs, as a checkpoint of the run's route (a teacher's anchors)."""
    (run_dir / "route").mkdir(exist_ok=True)
    save_atomic(model.state_dict(), run_dir / "route" / f"epoch_{epoch:04d}.pt")
