"""Coefficients that change over epochs: temperature, KD weight, label smoothing, anchors.

A config field that is `Schedulable` takes a number (constant), a list of `[epoch, value]` pairs
(held until the next pair), or a mapping with a `kind`:

    temperature: 4.0
    temperature: {kind: cosine, start: 8.0, end: 2.0}
    w_kd: {kind: linear, start: 0.0, end: 0.9, end_epoch: 10}
    w_kd: {kind: step, start: 0.9, gamma: 0.5, milestones: [10, 20]}
    temperature: [[0, 8.0], [10, 4.0], [20, 1.0]]

Every schedule has `value_at(epoch, total_epochs)` for a 0-based epoch, and `schedule_curve` plots
it. For linear and cosine, s = clip((epoch - start_epoch) / (end_epoch - start_epoch), 0, 1), and
`end_epoch` defaults to the last epoch (METHODS.md section 3).

A param changed while its run trained (`kdlib set`, kdlib.tuning) becomes a `tuned` schedule: its
`base` until the first change, then each change's value from its epoch and step (within that epoch)
on. It is the one schedule that can change inside an epoch: `value_at_step(epoch, step, total)`.

    temperature: {kind: tuned, base: 4.0, changes: [{epoch: 2, step: 13, value: 1.5}]}
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator
from pydantic.fields import FieldInfo

from kdlib.spec import Section, shown


class Constant(Section):
    kind: Literal["constant"] = "constant"
    value: float

    def value_at(self, epoch: int, total_epochs: int) -> float:
        return self.value

    def extremes(self) -> list[float]:
        return [self.value]


class _Ramp(Section):
    start: float = Field(description="value at start_epoch and before")
    end: float = Field(description="value at end_epoch and after")
    start_epoch: int = Field(0, ge=0, description="epoch where the ramp begins")
    end_epoch: int | None = Field(None, ge=0, description="epoch where the ramp ends (default: the last epoch)")

    def progress(self, epoch: int, total_epochs: int) -> float:
        end = self.end_epoch if self.end_epoch is not None else max(total_epochs - 1, 0)
        if end <= self.start_epoch:
            return 1.0 if epoch >= self.start_epoch else 0.0
        return min(max((epoch - self.start_epoch) / (end - self.start_epoch), 0.0), 1.0)

    def extremes(self) -> list[float]:
        return [self.start, self.end]


class Linear(_Ramp):
    kind: Literal["linear"] = "linear"

    def value_at(self, epoch: int, total_epochs: int) -> float:
        return self.start + (self.end - self.start) * self.progress(epoch, total_epochs)


class Cosine(_Ramp):
    kind: Literal["cosine"] = "cosine"

    def value_at(self, epoch: int, total_epochs: int) -> float:
        s = self.progress(epoch, total_epochs)
        return self.end + (self.start - self.end) * (1 + math.cos(math.pi * s)) / 2


class Step(Section):
    kind: Literal["step"] = "step"
    start: float = Field(description="value before the first milestone")
    gamma: float = Field(0.1, description="factor applied at each milestone")
    milestones: list[int] = Field(description="epochs at which the value is multiplied by gamma")

    def value_at(self, epoch: int, total_epochs: int) -> float:
        return self.start * self.gamma ** sum(epoch >= m for m in self.milestones)

    def extremes(self) -> list[float]:
        return [self.start * self.gamma**k for k in range(len(self.milestones) + 1)]


class Points(Section):
    kind: Literal["list"] = "list"
    points: list[tuple[int, float]] = Field(
        min_length=1,
        description="[epoch, value] pairs; each value holds "
        "until the next pair's epoch, the first also before its epoch",
    )

    @model_validator(mode="after")
    def _sorted(self) -> Points:
        epochs = [e for e, _ in self.points]
        if epochs != sorted(set(epochs)):
            raise ValueError(f"points: epochs must increase strictly, got {epochs}")
        return self

    def value_at(self, epoch: int, total_epochs: int) -> float:
        current = self.points[0][1]
        for start, value in self.points:
            if epoch >= start:
                current = value
        return current

    def extremes(self) -> list[float]:
        return [v for _, v in self.points]


class Change(Section):
    """One change made while a run trained: from `step` of `epoch` on (both 0-based), the value is `value`."""

    epoch: int = Field(ge=0, description="the epoch of the change (0-based)")
    step: int = Field(0, ge=0, description="the step within that epoch from which the value holds (0-based)")
    value: float = Field(description="the value from then on")

    def at(self) -> tuple[int, int]:
        return self.epoch, self.step


def _in_order(changes: list[Change]) -> list[Change]:
    places = [c.at() for c in changes]
    if places != sorted(set(places)):
        raise ValueError(f"changes: (epoch, step) must increase strictly, got {places}")
    return changes


Changes = Annotated[list[Change], AfterValidator(_in_order)]


def changed(changes: list[Change], epoch: int, step: int, value: float) -> list[Change]:
    """`changes` with one more, from (epoch, step) on: it replaces those at or after that place (a run
    replayed from a checkpoint makes them again)."""
    return [*(c for c in changes if c.at() < (epoch, step)), Change(epoch=epoch, step=step, value=value)]


def value_after(changes: list[Change], epoch: int, step: int) -> float | None:
    """The value of the last change made at or before (epoch, step), or None before the first."""
    found = None
    for change in changes:
        if change.at() <= (epoch, step):
            found = change.value
    return found


Plain = Annotated[Constant | Linear | Cosine | Step | Points, Field(discriminator="kind")]


class Tuned(Section):
    """A schedule changed while its run trained (kdlib.tuning): `base` until the first change, then each
    change's value from its epoch and step on."""

    kind: Literal["tuned"] = "tuned"
    base: Annotated[Plain, BeforeValidator(lambda v: _coerce(v))] = Field(
        description="the schedule the run started with"
    )
    changes: Changes = Field(min_length=1, description="[{epoch, step, value}]: the value from that step on")

    def value_at(self, epoch: int, total_epochs: int) -> float:
        """At the epoch's first step."""
        return self.value_at_step(epoch, 0, total_epochs)

    def value_at_step(self, epoch: int, step: int, total_epochs: int) -> float:
        found = value_after(self.changes, epoch, step)
        return self.base.value_at(epoch, total_epochs) if found is None else found

    def extremes(self) -> list[float]:
        return [*self.base.extremes(), *(c.value for c in self.changes)]


Schedule = Annotated[Constant | Linear | Cosine | Step | Points | Tuned, Field(discriminator="kind")]


def tuned(schedule: float | Schedule, epoch: int, step: int, value: float) -> Tuned:
    """`schedule` changed to `value` from step `step` of epoch `epoch` on."""
    if isinstance(schedule, Tuned):
        return Tuned(base=schedule.base, changes=changed(schedule.changes, epoch, step, value))
    return Tuned(base=as_schedule(schedule), changes=[Change(epoch=epoch, step=step, value=value)])


_EXPECTED = "a number or a schedule ({kind: cosine, start: 8, end: 2}, or [[epoch, value], ...])"


def _coerce(value: object) -> object:
    if isinstance(value, bool) or isinstance(value, str) or value is None:
        raise ValueError(f"expected {_EXPECTED}, got {shown(value)}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {value}")
        return Constant(value=float(value))
    if isinstance(value, (list, tuple)):
        return {"kind": "list", "points": value}
    if isinstance(value, dict) and "kind" not in value:
        raise ValueError("a schedule needs a 'kind': one of constant, linear, cosine, step, list, tuned")
    if not isinstance(value, dict | Section):
        raise ValueError(f"expected {_EXPECTED}, got {type(value).__name__}")
    return value


def Schedulable(gt: float | None = None, ge: float | None = None, le: float | None = None):  # noqa: N802
    """The type of a config field that may follow a schedule, with bounds every value must keep."""

    def check(schedule: Schedule) -> Schedule:
        for v in schedule.extremes():
            if (gt is not None and not v > gt) or (ge is not None and not v >= ge) or (le is not None and not v <= le):
                bounds = ", ".join(f"{op} {b}" for op, b in ((">", gt), (">=", ge), ("<=", le)) if b is not None)
                raise ValueError(f"every value must be {bounds}; this schedule reaches {v}")
        return schedule

    # The bounds are recorded beside the flag for the forms (`kdlib.controls`): they hold for a schedule's
    # values, not for the schedule object, so they cannot be pydantic's own constraints.
    bounds = {k: v for k, v in (("gt", gt), ("ge", ge), ("le", le)) if v is not None}
    extra = {"schedulable": True, "bounds": bounds}
    return Annotated[Schedule, BeforeValidator(_coerce), AfterValidator(check), Field(json_schema_extra=extra)]


def is_schedulable(info: FieldInfo) -> bool:
    """Whether a config field is `Schedulable`: a number or a schedule."""
    return bool((info.json_schema_extra or {}).get("schedulable"))


def as_schedule(value: float | Schedule) -> Schedule:
    return Constant(value=float(value)) if isinstance(value, (int, float)) else value


def value_at_step(schedule: float | Schedule, epoch: int, step: int, total_epochs: int) -> float:
    """The value at step `step` of epoch `epoch`: the epoch's value, but for a tuned schedule's changes."""
    s = as_schedule(schedule)
    return s.value_at_step(epoch, step, total_epochs) if isinstance(s, Tuned) else s.value_at(epoch, total_epochs)


def schedule_curve(schedule: float | Schedule, total_epochs: int) -> list[float]:
    """The value at every epoch, for plots and previews."""
    s = as_schedule(schedule)
    return [s.value_at(e, total_epochs) for e in range(total_epochs)]
