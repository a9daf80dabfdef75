"""The config reference in Markdown, generated from the pydantic models and the registries.

`python -m kdlib reference` prints it; the README carries it between markers, and a test checks
that the two agree, so the reference cannot drift from the code.
"""

from __future__ import annotations

import json
import types
import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from kdlib.config import (
    LRScheduleSection,
    OptimizerSection,
    ProbesSection,
    RouteSection,
    RunConfig,
    SweepSection,
    TeacherCacheSection,
    TeacherSection,
)
from kdlib.registry import summary
from kdlib.schedules import is_schedulable


def _type_name(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        inner = typing.get_args(annotation)[0]
        if typing.get_origin(inner) in (typing.Union, types.UnionType) and any(
                getattr(a, "__name__", "") == "Constant" for a in typing.get_args(inner)):
            return "number or schedule"
        return _type_name(inner)
    if origin is typing.Literal:
        return " \\| ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        kinds = [a.model_fields["kind"].default for a in args if isinstance(a, type) and issubclass(a, BaseModel)
                 and "kind" in a.model_fields]
        if kinds and len(kinds) == len(args):
            return "`{kind: " + "\\|".join(kinds) + ", ...}`"
        return " or ".join(_type_name(a) for a in args)
    if origin in (list, tuple):
        return f"list of {_type_name(typing.get_args(annotation)[0])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "`{name, ...params}`" if annotation.__name__ == "Spec" else "section"
    return getattr(annotation, "__name__", str(annotation)).replace("NoneType", "null")


def _default(field) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default if field.default is not PydanticUndefined else field.default_factory()
    if isinstance(value, BaseModel):
        dumped = {k: v for k, v in value.model_dump(mode="json").items() if k not in ("kind",)}
        value = dumped if len(json.dumps(dumped)) < 40 else "see below"
        if value == "see below" or not dumped:
            return "see below" if value == "see below" else "{}"
    if isinstance(value, dict) and set(value) == {"name"}:
        return value["name"]
    return f"`{json.dumps(value)}`" if not isinstance(value, str) else f"`{value}`"


def fields_table(model: type[BaseModel], skip: tuple[str, ...] = ("name",)) -> list[str]:
    lines = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        meaning = (field.description or "").replace("|", "\\|").replace("\n", " ")
        kind = "number or schedule" if is_schedulable(field) else _type_name(field.annotation)
        lines.append(f"| `{name}` | {kind} | {_default(field)} | {meaning} |")
    return lines


def _registry_section(title: str, registry, intro: str) -> list[str]:
    lines = [f"### {title}", "", intro, ""]
    for name, entry in registry.items():
        params = entry.Params
        own = [n for n in params.model_fields if n != "name"]
        doc = summary(entry)
        lines += [f"**`{name}`**" + (f": {doc}" if doc else ""), ""]
        lines += (fields_table(params) if own else ["(no parameters)"]) + [""]
    return lines


def config_reference() -> str:
    from kdlib.data import DATASETS
    from kdlib.methods import METHODS
    from kdlib.models import MODELS

    lines = ["### Run", "", "The top level of a run config.", ""]
    lines += fields_table(RunConfig, skip=()) + [""]
    sections = [("teacher", TeacherSection, "How the teacher is trained (once, then reused) or loaded."),
                ("teacher.cache", TeacherCacheSection,
                 "The frozen teacher's logits on the training split, computed once and kept with the teacher "
                 "(see *The teacher-output cache* above)."),
                ("optimizer", OptimizerSection, "Also inside `teacher:` for the teacher's own training."),
                ("lr_schedule", LRScheduleSection, "Per-step learning-rate decay."),
                ("teacher.route / output.route", RouteSection, "Which epochs' weights are kept (RCO's anchors, the route view)."),
                ("probes", ProbesSection, "What is measured besides the loss."),
                ("sweep", SweepSection, "A hyperparameter search over the config (`python -m kdlib sweep`, see Sweeps "
                 "above); no part of any run. Command-line flags override these.")]
    for title, model, intro in sections:
        lines += [f"### {title}", "", intro, ""] + fields_table(model, skip=("model",) if model is TeacherSection else ()) + [""]
    lines += ["### Schedules", "",
              "A field typed *number or schedule* takes a number, a list of `[epoch, value]` pairs, or a mapping: "
              "`{kind: linear|cosine, start, end, start_epoch, end_epoch}`, `{kind: step, start, gamma, milestones}`, "
              "`{kind: list, points}`, `{kind: constant, value}`. Epochs are 0-based; `end_epoch` defaults to the last. "
              "A param changed while its run trained (`kdlib set`) is stored as `{kind: tuned, base, changes: [{epoch, "
              "step, value}]}`: `base` until the first change, then each value from that step of that epoch on.", ""]
    lines += _registry_section("Methods (`method:`)", METHODS, "`method: {name: ..., <params>}`.")
    lines += _registry_section("Datasets (`data:`)", DATASETS, "`data: {name: ..., <params>}`.")
    lines += _registry_section("Models (`student:`, `teacher.model:`)", MODELS, "`student: {name: ..., <params>}`.")
    return "\n".join(lines).rstrip() + "\n"
