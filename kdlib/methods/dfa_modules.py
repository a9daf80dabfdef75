"""DFA's building blocks that are not its maths: connectors between feature shapes, the plan of
which teacher outputs a student stage learns from, and the search's data plumbing (a held-out half
of the training split, endless batches, the search's own state). `kdlib.methods.dfa` holds the method.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.data import Subset

from kdlib.data.base import Batch, LoaderSplit, Split, TensorSplit


class _SpatialMean(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(2).mean(2)


_CONV = {2: nn.Conv1d, 3: nn.Conv2d}
_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm1d, 3: nn.BatchNorm2d}
_POOL = {2: nn.AdaptiveAvgPool1d, 3: nn.AdaptiveAvgPool2d}


def make_connector(source: tuple[int, ...], target: tuple[int, ...]) -> nn.Module:
    """1x1 conv (linear for vectors) + BN from features shaped `source` to `target` (no batch dim).

    Maps of another length or size are average-pooled to the target's first; a map becoming a vector
    is averaged over its positions; a vector becoming a map goes through a linear layer to every
    position (C_out x positions outputs).
    """
    if len(source) not in _BN or len(target) not in _BN:
        raise ValueError(f"features of shape {list(source)} -> {list(target)}: only [C], [C, L], [C, H, W]")
    c_in, c_out = source[0], target[0]
    if len(target) == 1:
        layers = [_SpatialMean()] if len(source) > 1 else []
        layers += [nn.Linear(c_in, c_out, bias=False), nn.BatchNorm1d(c_out)]
    elif len(source) == 1:
        layers = [nn.Linear(c_in, math.prod(target), bias=False), nn.Unflatten(1, target), _BN[len(target)](c_out)]
    elif len(source) != len(target):
        raise ValueError(f"cannot connect a {len(source) - 1}-D map {list(source)} to a {len(target) - 1}-D map")
    else:
        layers = [] if source[1:] == target[1:] else [_POOL[len(target)](target[1:])]
        conv = _CONV[len(target)](c_in, c_out, 1, bias=False)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # OFD's normal(0, sqrt(2/n))
        layers += [conv, _BN[len(target)](c_out)]
    return nn.Sequential(*layers)


@dataclass
class StagePlan:
    """Student tap `student_tap` learns from the aggregate of `candidates`, which replaces `end`'s output."""

    student_tap: str
    student_path: str
    candidates: list[str]
    end: str


@contextmanager
def forward_hooks(model: nn.Module, hooks: dict[str, Callable]) -> Iterator[None]:
    handles = [model.get_submodule(path).register_forward_hook(hook) for path, hook in hooks.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def split_in_two(split: Split, held_out_fraction: float, seed: int) -> tuple[Split, Split]:
    """(train half, held-out half) of a split by a seeded permutation of its indices."""
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    cut = max(1, min(len(split) - 1, round(len(split) * held_out_fraction)))
    parts = order[cut:], order[:cut]
    if isinstance(split, TensorSplit):
        return tuple(TensorSplit(split.x[p.to(split.x.device)], split.y[p.to(split.y.device)]) for p in parts)
    return tuple(
        LoaderSplit(Subset(split.dataset, p.tolist()), split.targets[p], split.num_workers, split.pin_memory)
        for p in parts
    )


def endless_batches(split: Split, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
    drop_last = len(split) > batch_size  # no batch of one for BatchNorm, unless the split is that small
    while True:
        yield from split.batches(batch_size, shuffle=True, generator=generator, drop_last=drop_last)


@dataclass
class Search:
    """The search's own state: a copy of the student, both paths' connectors, and the two optimizers."""

    student: nn.Module
    to_teacher: nn.ModuleList  # C'_i: student stage feature -> teacher group output
    to_student: nn.ModuleList  # R_i: aggregate -> student stage output
    weights: list[nn.Parameter]
    alphas: list[nn.Parameter]
    weight_optimizer: torch.optim.Optimizer
    alpha_optimizer: torch.optim.Optimizer
