"""The things a run tells the world (five, and a sixth when it is tuned while it trains), and the Sink
protocol that hears them.

Events carry plain data (numbers, strings, numpy arrays), never tensors or models, so a sink
can write them anywhere: the run store, a progress bar, a list in a test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from time import time as now
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class RunStarted:
    total_epochs: int
    start_epoch: int  # 0, or the epoch a resumed run continues at
    steps_per_epoch: int
    device: str
    train_size: int


@dataclass(frozen=True)
class StepLogged:
    epoch: int
    step: int  # global step, counted from the run's first epoch
    scalars: dict[str, float]
    time: float = field(default_factory=now)  # when the values were produced (the store keeps it)


@dataclass(frozen=True)
class EpochEnded:
    epoch: int
    step: int
    scalars: dict[str, float]
    per_sample: dict[str, np.ndarray] = field(default_factory=dict)  # "split.key" -> values by dataset index
    time: float = field(default_factory=now)


@dataclass(frozen=True)
class CheckpointSaved:
    epoch: int  # the last completed epoch
    path: str


@dataclass(frozen=True)
class ParamsChanged:
    """Changes asked of the run while it trained (kdlib.tuning) took effect from this step on."""

    epoch: int
    step: int  # global step
    epoch_step: int  # the step within the epoch
    values: dict[str, float]  # config path -> value, e.g. {"method.temperature": 1.5}
    requests: tuple[int, ...] = ()  # the store's ids of the requests
    time: float = field(default_factory=now)


@dataclass(frozen=True)
class RunEnded:
    status: str  # done | stopped | failed
    error: str | None = None


Event = RunStarted | StepLogged | EpochEnded | CheckpointSaved | ParamsChanged | RunEnded


class Sink(Protocol):
    def emit(self, event: Event) -> None: ...

    def close(self) -> None: ...


class MemorySink:
    """Keeps every event in a list (tests, notebooks)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def close(self) -> None:
        pass

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]
