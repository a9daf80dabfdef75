"""One description of "a control for a config field", for both front ends: the app's forms (Streamlit)
and the notebook widgets (ipywidgets) each render the same `FieldControl`s in their own toolkit.

A control is read off a pydantic field: its kind by type, its default, its bounds (a `Field`'s ge / gt
/ le / lt, or those a `Schedulable` records), the choices of a `Literal`, and its help, the field's
`description`; so a new method's params get controls with no front-end code. A section that is one of
several kinds (RCO's anchors: evenly spaced, a list of the teacher's epochs, greedy) is a choice of its
`Variant`s, each with its own fields' controls; a list whose values are a teacher's saved epochs says so
(`choices_from`), and a front end that knows them offers a pick of them. Also here: the plain data of a
schedule editor (a schedule as a mapping with a `kind`, its points as text, its curve).
"""

from __future__ import annotations

import inspect
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from kdlib.config import RouteSection, parse_yaml_text
from kdlib.schedules import Schedule, is_schedulable, schedule_curve
from kdlib.tuning import editable_schedule

Kind = Literal["number", "integer", "boolean", "choice", "schedule", "list", "text", "section", "variants"]
BOUNDS = ("ge", "gt", "le", "lt")


@dataclass(frozen=True)
class FieldControl:
    """How to ask for one config field.

    `kind`: number, integer, boolean, choice (of `choices`), schedule (a number or a schedule), text,
    variants (a section of several kinds, each a `Variant` with its own controls: RCO's anchors), or a
    value typed as YAML: list, section (`hint` says how). `choices_from`: where a list's values come
    from when a front end knows them (`teacher_route`: the teacher's saved epochs, `route_choices`).
    `optional`: None is a value too (shown blank, "none" or "auto"). `default`: the field's, as pydantic
    gives it (a section's default is a model: `plain` turns any value into plain data).
    """

    name: str
    label: str
    kind: Kind
    default: Any = None
    help: str | None = None
    optional: bool = False
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple = ()
    hint: str = ""
    variants: tuple[Variant, ...] = ()
    choices_from: str = ""
    annotation: Any = field(default=None, repr=False, compare=False)

    def accepts(self, value: float) -> bool:
        """Whether a number keeps the field's bounds (a schedule's: every value it reaches)."""
        return (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )

    def plain(self, value: Any) -> Any:
        """`value` as plain data (what YAML and the config take): a section's model becomes its mapping."""
        if isinstance(value, BaseModel):
            return value.model_dump(mode="json")
        try:
            return TypeAdapter(self.annotation).dump_python(value, mode="json")
        except (ValidationError, TypeError, ValueError):
            return value

    def variant(self, kind: str) -> Variant:
        """The variant of this kind (the first when there is none such)."""
        return next((v for v in self.variants if v.kind == kind), self.variants[0])

    def variant_start(self, value: Any) -> dict:
        """A variants section's value as plain data with a known `kind` (the default's when it has none)."""
        plain = value if isinstance(value, dict) else self.plain(value)  # a dict as it is: it may be no variant
        known = isinstance(plain, dict) and plain.get("kind") in [v.kind for v in self.variants]
        return dict(plain) if known else self.plain(self.default)


@dataclass(frozen=True)
class Variant:
    """One kind of a section that takes several: its `kind` value, how it is offered (`label`, `help`: the first
    line of its class's docstring, `label: help`) and its own fields' controls."""

    kind: str
    label: str
    help: str
    fields: tuple[FieldControl, ...]


def field_controls(model: type[BaseModel], skip: tuple[str, ...] = ("name",)) -> list[FieldControl]:
    """A control for every field of a pydantic class but those in `skip` (a Spec's `name` is its key)."""
    return [field_control(name, info) for name, info in model.model_fields.items() if name not in skip]


def field_control(name: str, info: FieldInfo, label: str | None = None) -> FieldControl:
    """The control of one field; `label` defaults to the field's name."""
    annotation, optional = _unwrap_optional(info.annotation)
    kind, choices, hint = _kind(annotation, info)
    variants = _variants(annotation) if kind == "section" else ()
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    return FieldControl(
        name=name,
        label=label or name,
        kind="variants" if len(variants) > 1 else kind,
        default=info.get_default(call_default_factory=True),
        help=info.description,
        optional=optional,
        choices=choices,
        hint=hint,
        variants=variants if len(variants) > 1 else (),
        choices_from=str(extra.get("choices_from", "")),
        annotation=info.annotation,
        **_bounds(info),
    )


def _kind(annotation: Any, info: FieldInfo) -> tuple[Kind, tuple, str]:
    if is_schedulable(info):
        return "schedule", (), ""
    if typing.get_origin(annotation) is Literal:
        return "choice", typing.get_args(annotation), ""
    simple = {bool: "boolean", int: "integer", float: "number", str: "text"}
    if annotation in simple:
        return simple[annotation], (), ""
    if typing.get_origin(annotation) in (list, tuple, set):
        return "list", (), "YAML, e.g. 32, 32"
    return "section", (), _section_hint(annotation)


def _bounds(info: FieldInfo) -> dict[str, float]:
    """ge / gt / le / lt of a plain field (pydantic's constraints) or of a schedulable one (recorded beside it)."""
    if is_schedulable(info):
        return dict(info.json_schema_extra.get("bounds", {}))
    return {b: getattr(m, b) for m in info.metadata for b in BOUNDS if getattr(m, b, None) is not None}


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else annotation), True
    return annotation, False


def _variants(annotation: Any) -> tuple[Variant, ...]:
    """The kinds of a union of sections, each with its fields' controls (none for a plain section)."""
    found = []
    for a in _flat_union(annotation):
        if isinstance(a, type) and issubclass(a, BaseModel) and "kind" in a.model_fields:
            kind = typing.get_args(a.model_fields["kind"].annotation)[0]
            first = inspect.cleandoc(vars(a).get("__doc__") or kind).splitlines()[0]
            label, _, help_text = first.partition(": ")
            found.append(Variant(kind, label, help_text, tuple(field_controls(a, skip=("kind",)))))
    return tuple(found)


def route_choices(teacher_epochs: Any, route: Any = None) -> list[int]:
    """The teacher's saved epochs (its route) for `teacher.epochs` and `teacher.route` as a form holds them; []
    while they make no route (a blank or refused number)."""
    try:
        return RouteSection.model_validate(route or {}).saved_epochs(int(teacher_epochs))
    except (ValidationError, TypeError, ValueError):
        return []


def _section_hint(annotation: Any) -> str:
    """How to type a section: the kinds of a union of sections, else a list example."""
    kinds = [
        typing.get_args(a.model_fields["kind"].annotation)[0]
        for a in _flat_union(annotation)
        if isinstance(a, type) and issubclass(a, BaseModel) and "kind" in a.model_fields
    ]
    return f"YAML; kind: {', '.join(kinds)}" if kinds else "YAML, e.g. 32, 32"


def _flat_union(annotation: Any) -> list:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for arg in typing.get_args(annotation) for a in _flat_union(arg)]
    return [annotation]


# --- a schedule editor's plain data -------------------------------------------------------------------

SCHEDULE_KINDS = ("constant", "linear", "cosine", "step", "list")


def schedule_start(value: Any) -> dict:
    """A schedulable field's value as a mapping with a `kind` (a number is a constant, a list its points)."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, dict) and value.get("kind") == "tuned":  # changed while its run trained (kdlib.tuning)
        value = editable_schedule(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"kind": "constant", "value": float(value)}
    if isinstance(value, list):
        return {"kind": "list", "points": value}
    known = isinstance(value, dict) and value.get("kind") in SCHEDULE_KINDS
    return dict(value) if known else {"kind": "constant", "value": 1.0}


def first_value(schedule: dict) -> float:
    """The value a schedule starts at: where an editor's number fields begin when the kind changes."""
    if schedule["kind"] == "list":
        return float(schedule["points"][0][1]) if schedule.get("points") else 1.0
    return float(schedule.get("value", schedule.get("start", 1.0)))


def points_text(points: list) -> str:
    """[[0, 8.0], [10, 4.0]] -> "0: 8, 10: 4"."""
    return ", ".join(f"{int(e)}: {float(v):g}" for e, v in points)


def parse_points(text: str) -> Any:
    """`0: 8, 10: 4` (or YAML pairs) -> [[0, 8], [10, 4]]; what cannot be read goes on for the config to refuse."""
    parsed = parse_yaml_text(f"{{{text}}}" if text.strip() and not text.strip().startswith(("[", "{")) else text)
    return [[e, v] for e, v in parsed.items()] if isinstance(parsed, dict) else parsed


def schedule_preview(value: Any, epochs: int) -> list[float] | None:
    """The schedule's values over the epochs, bounds aside (so an out-of-range schedule is shown, then refused);
    None while the numbers make no schedule."""
    try:
        schedule = value if isinstance(value, int | float) else TypeAdapter(Schedule).validate_python(value)
        return schedule_curve(schedule, max(int(epochs), 1))
    except (ValidationError, TypeError, ValueError):
        return None
