"""Tune while it trains: what may change in a running run, the checks at the door, and how a change is kept.

`kdlib set RUN method.temperature=1.5`, `RunHandle.set(...)` and the app's and the widgets' sliders ask
a running (or paused) run to change a method param that takes a schedule, or `optimizer.lr`. The
request waits in the store (kdlib.store.tuning) until the run's next logged step, where the store's
control hands it to the trainer, which applies it from its next step on and says where
(`events.ParamsChanged`).

The rule that makes a change reproducible: a change is kept at the step it took effect, (epoch, step
within the epoch), as part of the run's config, so a resumed run, a replayed epoch and an exported
YAML do exactly what the live run did:

- a method param becomes a `tuned` schedule (kdlib.schedules.Tuned): the schedule it had until then,
  and the new value from that step on (a constant: a cosine it followed before stops there);
- `optimizer.lr` gets an entry in the config's `lr_changes`: from that step on it is the base learning
  rate, which kdlib's lr schedules (constant, cosine, step) go on scaling; a torch scheduler keeps
  learning rates of its own, so under one the lr is not tunable.

A request is checked before anything is written: the run must be running or paused, the field must
be one of the tunable ones, the value a finite number within the field's bounds. Which fields a run
may tune, with their bounds, is recorded when the run is created (`tunables`), so the check imports
no torch. The logic here is pure (plain data and pydantic models); the store and the trainer call it.
"""

from __future__ import annotations

import difflib
import math
from typing import Any

import yaml

from kdlib.schedules import Changes, Schedulable, changed, is_schedulable, tuned, value_after, value_at_step

LR = "optimizer.lr"
LR_BOUNDS = {"gt": 0.0}
TUNABLE_STATUSES = ("running", "paused")
SHORT_LR_SCHEDULES = ("constant", "cosine", "step")  # kdlib.config's; repeated so that this module needs no config


class TuningRefused(ValueError):
    """A change a run does not take; the message names the field and what to do, one line per problem."""


def tunables(config) -> dict:
    """What a run may change while it trains: {"tunable": {path: bounds}, "fixed": {path: why not}}."""
    tunable, fixed = {}, {}
    for name, info in type(config.method).model_fields.items():
        if name == "name":
            continue
        if is_schedulable(info):
            tunable[f"method.{name}"] = dict(info.json_schema_extra.get("bounds", {}))
        else:
            fixed[f"method.{name}"] = "it is fixed once the run starts (it takes no schedule)"
    if config.lr_schedule.name in SHORT_LR_SCHEDULES:
        tunable[LR] = dict(LR_BOUNDS)
    else:
        fixed[LR] = (f"lr_schedule {config.lr_schedule.name!r} is torch's and keeps learning rates of its own; the "
                     f"lr is tunable under kdlib's ({', '.join(SHORT_LR_SCHEDULES)})")
    for name in type(config.optimizer).model_fields:
        if f"optimizer.{name}" not in tunable:
            fixed.setdefault(f"optimizer.{name}", "it is fixed once the run starts")
    return {"tunable": tunable, "fixed": fixed}


def parse_assignments(texts: list[str]) -> dict[str, Any]:
    """`method.temperature=1.5` (a bare name is a method param: `temperature=1.5`) -> {path: value read as YAML}."""
    changes = {}
    for text in texts:
        path, equals, raw = text.partition("=")
        path = path.strip()
        if not equals or not path:
            raise TuningRefused(f"{text!r}: write FIELD=VALUE, e.g. method.temperature=1.5")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        changes[path if "." in path else f"method.{path}"] = value
    return changes


def check_changes(spec: dict, status: str, run_id: str, changes: dict[str, Any]) -> dict[str, float]:
    """The requested values as floats, or TuningRefused with every problem: a run that is not running or
    paused, a field that is not tunable (unknown, or fixed), a value that is not a finite number within
    the field's bounds."""
    if status not in TUNABLE_STATUSES:
        raise TuningRefused(f"run {run_id} is {status}: {_not_now(status, run_id)}")
    if not changes:
        raise TuningRefused("nothing to set: give FIELD=VALUE, e.g. method.temperature=1.5")
    tunable, fixed = spec["tunable"], spec["fixed"]
    listed = ", ".join(tunable) or "nothing"
    problems, values = [], {}
    for path, value in changes.items():
        if path in fixed:
            problems.append(f"{path}: not tunable while the run trains: {fixed[path]}. Tunable: {listed}")
        elif path not in tunable:
            close = difflib.get_close_matches(path, [*tunable, *fixed], n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append(f"{path}: this run has no such field; {hint}tunable: {listed}")
        elif (problem := value_problem(value, tunable[path])) is not None:
            problems.append(f"{path}={value!r}: {problem}, e.g. {path}={example(tunable[path])}")
        else:
            values[path] = float(value)
    if problems:
        raise TuningRefused("\n".join(problems))
    return values


def _not_now(status: str, run_id: str) -> str:
    if status == "queued":
        return "it has not started; set the value once it runs, or in its config"
    if status in ("stopped", "failed"):
        return f"a set changes a run while it trains; resume it first (`python -m kdlib resume {run_id}`)"
    return ("a set changes a run while it trains; train another with the value in its config "
            "(`python -m kdlib run CONFIG --set method.temperature=1.5`)")


def value_problem(value: Any, bounds: dict) -> str | None:
    """What is wrong with a value for a field of these bounds (gt, ge, le, lt), or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"give a number (a schedule is set in the run's config, not while it trains), not {value!r}"
    if not math.isfinite(value):
        return "give a finite number"
    tests = {"gt": (float.__gt__, ">"), "ge": (float.__ge__, ">="), "le": (float.__le__, "<="), "lt": (float.__lt__, "<")}
    broken = [f"{sign} {bound:g}" for key, bound in bounds.items() for test, sign in [tests[key]]
              if not test(float(value), float(bound))]
    return f"the value must be {' and '.join(broken)}" if broken else None


def example(bounds: dict) -> str:
    low = bounds.get("ge", bounds.get("gt", 0.0))
    high = bounds.get("le", bounds.get("lt"))
    value = (low + high) / 2 if high is not None else low + 1.0
    return f"{value:g}"


# --- applying a change: the trainer's config (models) and the store's (plain data) ---------------------


def apply_changes(config, values: dict[str, float], epoch: int, step: int) -> None:
    """Change a run's config in place from step `step` of epoch `epoch` on. `config.method` is the
    distiller's params, so the distiller reads a tuned param at its next step."""
    for path, value in values.items():
        if path == LR:
            config.lr_changes = changed(config.lr_changes, epoch, step, value)
        else:
            name = path.removeprefix("method.")
            setattr(config.method, name, tuned(getattr(config.method, name), epoch, step, value))


_SCHEDULE = None


def _schedule_adapter():
    """A pydantic reader of any schedule, a number or a list of points included (built once, on first use)."""
    global _SCHEDULE
    if _SCHEDULE is None:
        from pydantic import TypeAdapter

        _SCHEDULE = TypeAdapter(Schedulable())
    return _SCHEDULE


def changed_config(config: dict, values: dict[str, float], epoch: int, step: int) -> dict:
    """The same change in a config as plain data (the stored YAML), which it returns changed."""
    for path, value in values.items():
        if path == LR:
            before = _changes(config.get("lr_changes") or [])
            config["lr_changes"] = [c.model_dump() for c in changed(before, epoch, step, value)]
        else:
            method, name = config["method"], path.removeprefix("method.")
            schedule = _schedule_adapter().validate_python(method[name])
            method[name] = _plain(tuned(schedule, epoch, step, value).model_dump(mode="json"))
    return config


def _changes(data: list) -> list:
    from pydantic import TypeAdapter

    return TypeAdapter(Changes).validate_python(data)


def _plain(value: Any) -> Any:
    """A constant base back to a plain number, as the config writes it."""
    if isinstance(value, dict) and value.get("kind") == "constant" and set(value) == {"kind", "value"}:
        return value["value"]
    return {k: _plain(v) for k, v in value.items()} if isinstance(value, dict) else value


def editable_schedule(schedule: dict) -> Any:
    """A tuned schedule (plain data) as a form's schedule editor can show it, for a new run: [epoch, value] points
    when it started constant, a change inside an epoch moved to the next epoch's start; else the schedule it
    started with (the changes are not carried). The stored config keeps the exact one."""
    base = _plain(schedule["base"])
    if isinstance(base, dict | list):
        return base
    points = [[0, base]]
    for change in schedule["changes"]:
        epoch = change["epoch"] + (1 if change.get("step", 0) else 0)
        points = [p for p in points if p[0] < epoch] + [[epoch, change["value"]]]
    return points


def lr_change_steps(lr_changes: list, steps_per_epoch: int) -> dict[int, float]:
    """{global step: base lr} of a config's `lr_changes`, a step past its epoch's end at the next epoch's start."""
    return {c.epoch * steps_per_epoch + min(c.step, steps_per_epoch): c.value for c in lr_changes}


def current_values(config: dict, spec: dict, epoch: int, step: int) -> dict[str, float]:
    """The value of every tunable field at (epoch, step) of a run, from its stored config (plain data)."""
    values = {}
    for path in spec["tunable"]:
        if path == LR:
            found = value_after(_changes(config.get("lr_changes") or []), epoch, step)
            values[path] = float(config["optimizer"]["lr"] if found is None else found)
        else:
            schedule = _schedule_adapter().validate_python(config["method"][path.removeprefix("method.")])
            values[path] = float(value_at_step(schedule, epoch, step, config.get("epochs", 1)))
    return values


def slider_range(bounds: dict, value: float) -> tuple[float, float]:
    """A slider's ends for a field of these bounds now at `value`: its own bounds where it has them, else 0
    and four times the value (at least 1)."""
    low = bounds.get("ge", bounds.get("gt", min(0.0, value)))
    high = bounds.get("le", bounds.get("lt", max(4 * abs(value), 1.0, low + 1.0)))
    if "gt" in bounds and "ge" not in bounds:
        low = bounds["gt"] + (high - bounds["gt"]) / 100  # a slider cannot keep off its end
    return float(low), float(high)


def lr_choices(value: float) -> list[float]:
    """Learning rates for a slider around `value`: 1, 2 and 5 per decade from a hundredth to a hundred times it."""
    exponent = math.floor(math.log10(value))
    grid = sorted({m * 10.0**e for e in range(exponent - 2, exponent + 3) for m in (1, 2, 5)} | {value})
    return [float(f"{v:.3g}") for v in grid]
