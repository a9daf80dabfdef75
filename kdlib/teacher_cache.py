"""The teacher-output cache: a frozen teacher's logits on the training split, computed once and kept.

A method that keeps the contract's default `forward` (KD, WSL, RCO, ...) asks its frozen teacher for
one thing: the logits of the training batch, in eval mode; the engine hands it a teacher of batches
(`MethodContext.teacher_logits`, and `TeacherRoute.teacher` for a route's checkpoints). When the inputs are deterministic, those
logits are the same every epoch and every run, so one pass computes them and the file is kept with
the teacher artifact: `<artifact>/outputs/<key>.npy`, [N, K] float32 or float16, memory-mapped, with
`<key>.json` beside it saying what the key covers (the data spec with its transform, the split, the
weights: final or a route epoch, the dtype, the augmentation draws). A user's checkpoint is never
written into: its caches go to `$KDLIB_HOME/teachers/outputs/`, keyed by the weights file's path,
size and modification time as well. A file lock makes two runs that need the same cache compute it
once; the file appears whole (written beside, then renamed). A teacher handed over as a module has
no artifact: its outputs are computed once per run and kept in memory.

With random augmentation the inputs change every epoch, so `teacher.cache.augment_draws: D` fixes D
seeded views per sample ([N, D, K]); the training split then picks one of those views per sample and
epoch (`LoaderSplit.draws`) and each batch says which (`batch.draw`).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from kdlib.config import RunConfig
from kdlib.data.base import Batch, DataBundle, LoaderSplit, Split
from kdlib.methods.base import METHODS, Distiller, TeacherLogits, TeacherRoute, model_teacher
from kdlib.spec import Spec

AUTO_MAX_BYTES = 2**30  # `enabled: auto` leaves larger caches (ImageNet-sized) to an explicit `enabled: true`
DEVICE_MAX_BYTES = 2**29  # caches up to 512 MiB move to the device whole; larger ones are read per batch
_NOT_IN_VALUES = ("num_workers", "download", "in_memory")  # data fields that change how samples are read, not what


class TeacherOutputs:
    """One set of teacher weights' logits on the training split, [N, K] or [N, D, K] with D draws: a teacher
    of batches (`TeacherLogits`) that looks its rows up instead of forwarding a model."""

    def __init__(self, table: np.ndarray, device: torch.device) -> None:
        self.device, self.draws = device, table.shape[1] if table.ndim == 3 else 0
        self.on_device = table.nbytes <= DEVICE_MAX_BYTES
        self.table = torch.from_numpy(np.array(table)).to(device) if self.on_device else table

    def __call__(self, batch: Batch) -> Tensor:
        """The batch's rows (its draws' rows under augmentation), float32 on the run's device."""
        if self.on_device:
            rows = self.table[batch.index] if not self.draws else self.table[batch.index, batch.draw]
            return rows.float()
        index = batch.index.cpu().numpy()
        rows = self.table[index] if not self.draws else self.table[index, batch.draw.cpu().numpy()]
        return torch.from_numpy(rows).to(self.device).float()


def reads_teacher_logits_only(method: type[Distiller]) -> bool:
    """Whether a method asks its teacher for the logits of the training batch and nothing else: true of every
    method that keeps the default `forward`, which is where the engine hands it the teacher's logits."""
    return method.forward is Distiller.forward


def random_augmentation(data: Spec) -> str | None:
    """The field that turns on random augmentation of the data (`data.augment`), or None if it is deterministic.

    A dataset counts as randomly augmented when a field named `augment` is true anywhere in its
    params (a domain pair's source included; its target is no part of the training split the cache covers).
    """

    def find(value: Any, path: str) -> str | None:
        if isinstance(value, dict):
            if value.get("augment") is True:
                return f"{path}.augment"
            sides = {k: v for k, v in value.items() if not (k == "target" and value.get("name") == "domain_pair")}
            return next((p for k, v in sides.items() if (p := find(v, f"{path}.{k}"))), None)
        return None

    return find(data.model_dump(mode="json"), "data")


def teacher_cache_refusal(config: RunConfig) -> tuple[str, str] | None:
    """Why the teacher-output cache cannot serve this run: (field of teacher.cache, message), or None."""
    method = METHODS.get(config.method.name)
    if config.teacher is None or not method.needs_teacher:
        return None  # no teacher is used: nothing to cache
    cache, augmented = config.teacher.cache, random_augmentation(config.data)
    if cache.augment_draws and not augmented:
        return "augment_draws", (
            f"the training data has no random augmentation, so there are no views to draw; set "
            f"teacher.cache.augment_draws: 0 (it was {cache.augment_draws})"
        )
    if not reads_teacher_logits_only(method):
        return "enabled", (
            f"method {config.method.name!r} does more with the teacher than read its logits of the training "
            "batch (its features, its own training, or other inputs), so they cannot come from a cache; "
            "set teacher.cache.enabled: auto or false"
        )
    if augmented and not cache.augment_draws:
        return "enabled", (
            f"the training data uses random augmentation ({augmented}: true); set {augmented}: false, or "
            "teacher.cache.augment_draws: N to cache N augmented views per sample"
        )
    return None


def cache_wanted(config: RunConfig, data: DataBundle) -> bool:
    """Whether this run reads its teacher's outputs from the cache (`enabled: true` was checked at validation)."""
    if config.teacher is None or config.teacher.cache.enabled is False:
        return False
    if not METHODS.get(config.method.name).needs_teacher or teacher_cache_refusal(config):
        return False  # auto: off where the cache could change the results
    cache = config.teacher.cache
    size = len(data.train) * max(cache.augment_draws, 1) * data.num_classes * np.dtype(cache.dtype).itemsize
    return cache.enabled is True or size <= AUTO_MAX_BYTES


def attach_teacher(
    config: RunConfig,
    source,
    teacher: nn.Module | None,
    route: TeacherRoute | None,
    data: DataBundle,
    device: torch.device,
) -> tuple[TeacherLogits | None, TeacherRoute | None]:
    """The teacher as a teacher of batches, from the cache where it applies (else a forward pass every
    step), and the route, whose checkpoints then come from the cache too. `source` is the artifact (or
    the module). Under `augment_draws` the training split is switched to its seeded views here.
    """
    if teacher is None:
        return None, route
    if not cache_wanted(config, data):
        return model_teacher(teacher), route
    cache = config.teacher.cache
    if cache.augment_draws:
        if not isinstance(data.train, LoaderSplit):
            raise ValueError("teacher.cache.augment_draws: the training split is held in memory, without augmentation")
        data.train.draws = cache.augment_draws
    shape = (len(data.train), *((cache.augment_draws,) if cache.augment_draws else ()), data.num_classes)

    def outputs(model: Callable[[], nn.Module], epoch: int | None) -> TeacherOutputs:
        def compute(out: np.ndarray) -> None:
            _teacher_pass(model(), data.train, out, 2 * config.teacher.batch_size, device)

        if isinstance(source, nn.Module):
            table = np.empty(shape, dtype=cache.dtype)
            compute(table)
        else:
            key = cache_key(config, epoch)
            table = load_or_compute(source.outputs_file(key, epoch), key, shape, cache.dtype, compute)
        return TeacherOutputs(table, device)

    if route is not None:
        load = route.load
        route = dataclasses.replace(route, logits=lambda epoch: outputs(lambda: load(epoch), epoch))
    return outputs(lambda: teacher, None), route


def cache_key(config: RunConfig, epoch: int | None) -> dict:
    """What a cached table depends on: the data as read (its transform included), the split, the
    teacher's weights (final, or after `epoch` epochs), the dtype and the augmentation draws."""
    return {
        "version": 1,
        "data": {k: v for k, v in config.data.model_dump(mode="json").items() if k not in _NOT_IN_VALUES},
        "split": "train",
        "model": config.teacher.model.model_dump(mode="json"),
        "weights": "final" if epoch is None else f"route epoch {epoch}",
        "dtype": config.teacher.cache.dtype,
        "augment_draws": config.teacher.cache.augment_draws,
    }


def load_or_compute(path: Path, key: dict, shape: tuple[int, ...], dtype: str, compute) -> np.ndarray:
    """The memory-mapped cache at `path`; computed first (once, under a file lock) if it is not there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            tmp = path.with_name(path.name + ".tmp")
            table = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
            compute(table)
            table.flush()
            del table
            path.with_suffix(".json").write_text(json.dumps(key, indent=1))
            os.replace(tmp, path)
    table = np.load(path, mmap_mode="r")
    if table.shape != shape:
        raise RuntimeError(f"the teacher-output cache {path} has shape {table.shape}, not {shape}; delete it")
    return table


@torch.no_grad()
def _teacher_pass(model: nn.Module, split: Split, out: np.ndarray, batch_size: int, device: torch.device) -> None:
    """The teacher's float32 logits on every sample (every seeded view) of `split`, written into `out` by index.

    Torch's generator is restored afterwards, so a run draws the same numbers whether it computed the
    cache or found it.
    """
    draws = [None] if out.ndim == 2 else range(out.shape[1])
    with torch.random.fork_rng(devices=[]):
        for draw in draws:
            kwargs = {} if draw is None else {"draw": draw}
            for batch in split.batches(batch_size, **kwargs):
                logits = model(batch.x.to(device)).float().cpu().numpy()
                index = batch.index.cpu().numpy()
                out[(index,) if draw is None else (index, draw)] = logits
