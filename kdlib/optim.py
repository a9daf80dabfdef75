"""What a model is trained with: the optimizer, the learning rate over the steps, mixed precision.

kdlib's short names (sgd, adam, adamw; constant, cosine, step) keep their defaults and set the learning
rate every step; any other name is a torch.optim (or torch.optim.lr_scheduler) class, made with the
keyword arguments the config gives, and a torch scheduler steps after every epoch or every step.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kdlib.config import SHORT_LR_SCHEDULES, SHORT_OPTIMIZERS, LRScheduleSection, OptimizerSection, RunConfig


def make_optimizer(section: OptimizerSection, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if section.name not in SHORT_OPTIMIZERS:
        return getattr(torch.optim, section.name)(params, **section.torch_arguments())
    if section.name == "sgd":
        momentum = 0.9 if section.momentum is None else section.momentum
        return torch.optim.SGD(params, lr=section.lr, momentum=momentum, nesterov=bool(section.nesterov),
                               weight_decay=section.weight_decay or 0.0)
    kind = torch.optim.Adam if section.name == "adam" else torch.optim.AdamW
    return kind(params, lr=section.lr, weight_decay=section.weight_decay or 0.0)


def make_lr_scheduler(section: LRScheduleSection, optimizer: torch.optim.Optimizer):
    """A torch scheduler named in the config, or None for kdlib's own (`lr_factor`, set every step)."""
    if section.name in SHORT_LR_SCHEDULES:
        return None
    return getattr(torch.optim.lr_scheduler, section.name)(optimizer, **section.torch_arguments())


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
        gamma = 0.1 if section.gamma is None else section.gamma
        return gamma ** sum(epoch >= m for m in section.milestones or [])
    return 1.0


def amp_settings(config: RunConfig, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, whether a grad scaler is needed): bf16 where supported, else fp16."""
    if not config.amp or device.type != "cuda":
        return None, False
    return (torch.bfloat16, False) if torch.cuda.is_bf16_supported() else (torch.float16, True)


