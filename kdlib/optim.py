"""What a model is trained with: the optimizer, the learning rate's factor at each step, mixed precision."""

from __future__ import annotations

import math

import torch
from torch import nn

from kdlib.config import LRScheduleSection, OptimizerSection, RunConfig


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


