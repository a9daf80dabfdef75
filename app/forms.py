"""Widgets made from a params class's fields, schedule editors, and error messages placed by their fields.

Each field is a `kdlib.controls.FieldControl` (a choice, a flag, a number, a list, a schedule, a section of
several kinds, with the field's `description` as help), the same description the notebook widgets render,
so a new method's params appear in the app with no app code. `context` carries what a form knows beyond
the params (the teacher's saved epochs, `teacher_route`), which a list of such epochs offers as a pick.
Values go into the config as plain data; `validate_config` judges them, and `FieldErrors` puts each
`path: message` line under the widget of that path.
"""

from __future__ import annotations

import math
from typing import Any

import streamlit as st
from pydantic.fields import FieldInfo

from app.common import bad_link, escape
from kdlib.config import parse_yaml_text, yaml_text
from kdlib.controls import (
    SCHEDULE_KINDS,
    FieldControl,
    field_control,
    field_controls,
    first_value,
    parse_points,
    points_text,
    schedule_preview,
    schedule_start,
)


class FieldErrors:
    """Empty slots under the widgets, by config path, filled once the config is validated."""

    def __init__(self) -> None:
        self.slots: dict[str, Any] = {}

    def slot(self, path: str) -> None:
        self.slots[path] = st.empty()

    def show(self, message: str) -> list[str]:
        """Put each `path: message` line under its widget (the longest matching path); returns every line."""
        lines = [line for line in message.splitlines() if line.strip()]
        by_slot: dict[str, list[str]] = {}
        for line in lines:
            path, _, text = line.partition(": ")
            head, _, rest = text.partition(": ")  # a section's own check names the field first
            if rest and f"{path}.{head}" in self.slots:
                path, text = f"{path}.{head}", rest
            target = _longest_prefix(path, self.slots)
            if target is not None:
                by_slot.setdefault(target, []).append(text if target == path else line)
        for target, texts in by_slot.items():
            self.slots[target].error("\n\n".join(map(escape, texts)))
        return lines


def _longest_prefix(path: str, paths: dict) -> str | None:
    parts = path.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in paths:
            return ".".join(parts[:n])
    return None


def _step(value: float) -> float:
    return float(10 ** (math.floor(math.log10(abs(value))) - 1)) if value else 0.1


def _holds(control: FieldControl, value: Any) -> bool:
    """Whether the widget of `control` can start at `value` (a link's value may be anything)."""
    if value is None:
        return control.optional or control.kind in ("text", "list", "section")
    number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if control.kind == "choice":
        return value in control.choices
    if control.kind == "boolean":
        return isinstance(value, bool)
    if control.kind == "integer":
        return number and isinstance(value, int) and abs(value) < 2**53
    if control.kind == "number":
        return number
    if control.kind == "schedule":
        return number or _holds_schedule(value)
    if control.kind == "variants":
        return control.variant_start(value) == (value if isinstance(value, dict) else control.plain(value))
    return True  # text, list, section: a text field shows whatever it is, and the config judges it


def _holds_schedule(value: Any) -> bool:
    """Whether the schedule editor can show `value`: a known kind whose numbers are finite numbers."""
    start = schedule_start(value)
    if not (isinstance(value, list) or isinstance(value, dict) and value.get("kind") == start["kind"]):
        return False  # schedule_start would show anything else as the constant 1
    try:
        numbers = [first_value(start), *(float(start[k]) for k in ("start", "end", "gamma") if k in start)]
        numbers += [float(v) for _, v in start.get("points", [])] if start["kind"] == "list" else []
        points_text(start.get("points", []) if start["kind"] == "list" else [])
        epochs = [start.get("start_epoch", 0), start.get("end_epoch") or 0]
    except (TypeError, ValueError, OverflowError, AttributeError, IndexError, KeyError):
        return False
    whole = all(isinstance(e, int) and not isinstance(e, bool) and abs(e) < 2**53 for e in epochs)
    return whole and all(math.isfinite(n) for n in numbers)


def link_start(path: str, value: Any, fits: bool, default: Any, key: str) -> Any:
    """Where a widget starts: `value`, or `default` when it does not fit, with the link warning the first time
    the widget is drawn (later the widget keeps its own value)."""
    if fits:
        return value
    if key not in st.session_state and f"{key}.kind" not in st.session_state:
        raw = st.query_params.get(path, yaml_text(value))
        bad_link(path, raw, yaml_text(default.model_dump(mode="json") if hasattr(default, "model_dump") else default))
    return default


def field_widget(label: str, info: FieldInfo, value: Any, key: str, path: str, default: Any) -> Any:
    """One widget for one field, starting at `value` (`default` when it cannot); returns what the user set."""
    return control_widget(field_control(label, info), value, key, path, default)


def control_widget(
    control: FieldControl, value: Any, key: str, path: str, default: Any, context: dict | None = None
) -> Any:
    """The widget of a `FieldControl` (any kind but schedule), starting at `value` (`default` when it cannot)."""
    value = link_start(path, value, _holds(control, value), default, key)
    label, help_text = control.label, control.help
    if control.kind == "variants":
        return variants_editor(control, value, key, path, context)
    if control.kind == "list" and (choices := (context or {}).get(control.choices_from)):
        return epochs_pick(control, value, key, choices)
    if control.kind == "choice":
        options = list(control.choices)
        return st.selectbox(
            label, options, index=options.index(value) if value in options else 0, key=key, help=help_text
        )
    if control.kind == "boolean":
        if control.optional:
            options = [None, True, False]
            return st.selectbox(
                label,
                options,
                index=options.index(value),
                format_func=lambda v: "auto" if v is None else str(v),
                key=key,
                help=help_text,
            )
        return st.checkbox(label, value=bool(value), key=key, help=help_text)
    if control.kind == "integer" and isinstance(value, int | None):
        return st.number_input(label, value=value, step=1, key=key, help=help_text, placeholder="none")
    if control.kind == "number" and isinstance(value, int | float | None):
        value = None if value is None else float(value)
        return st.number_input(
            label, value=value, step=_step(value or 0.0), format="%g", key=key, help=help_text, placeholder="none"
        )
    if control.kind == "text":
        text = st.text_input(label, value=value or "", key=key, help=help_text)
        return None if control.optional and not text.strip() else text
    hint = control.hint or "YAML"  # a list or a section (e.g. RCO's anchors): the YAML of its plain data
    text = st.text_input(label, value=yaml_text(control.plain(value)), key=key, help=f"{help_text or ''} ({hint})")
    return None if control.optional and not text.strip() else parse_yaml_text(text)


def epochs_pick(control: FieldControl, value: Any, key: str, choices: list[int]) -> list[int]:
    """A list of epochs picked among `choices` (a teacher's saved epochs), in increasing order; a picked epoch that
    is not among them (a link's, or a route since shortened) stays offered, for the config check to name."""
    picked = [v for v in value if isinstance(v, int) and not isinstance(v, bool)] if isinstance(value, list) else []
    options = sorted(set(choices) | set(picked) | set(st.session_state.get(key, [])))  # the user's picks stay
    shown = st.multiselect(
        control.label, options, default=None if key in st.session_state else picked, key=key, help=control.help
    )
    return sorted(shown)


def variants_editor(control: FieldControl, value: Any, key: str, path: str, context: dict | None) -> dict:
    """A section of several kinds (RCO's anchors): which kind, then that kind's own fields side by side."""
    start = control.variant_start(value)
    kinds = [v.kind for v in control.variants]
    st.markdown(f"**{control.label}**", help=control.help)
    cols = st.columns([1.3, 2])
    kind = cols[0].selectbox(
        "strategy",
        kinds,
        index=kinds.index(start["kind"]),
        format_func=lambda k: control.variant(k).label,
        key=f"{key}.kind",
        help="; ".join(f"{v.label}: {v.help}" for v in control.variants),
    )
    variant = control.variant(kind)
    cols[1].caption(variant.help)
    same = start if start["kind"] == kind else {}
    out: dict[str, Any] = {"kind": kind}
    widths = [2 if sub.choices_from else 1 for sub in variant.fields]
    for col, sub in zip(st.columns(widths) if widths else [], variant.fields, strict=True):
        with col:
            at, fresh = same.get(sub.name, sub.plain(sub.default)), sub.plain(sub.default)
            out[sub.name] = control_widget(sub, at, f"{key}.{kind}.{sub.name}", f"{path}.{sub.name}", fresh, context)
    return out


def params_widgets(
    params: type,
    section: str,
    defaults: dict[str, Any],
    key: str,
    errors: FieldErrors,
    epochs: int,
    names=None,
    columns: int = 2,
    fallback: dict[str, Any] | None = None,
    context: dict | None = None,
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Widgets for the fields of `params` (all but `name`, or those in `names`); returns values and curves.

    `section` is the config path of the params (`method`, `teacher.model`); `defaults` maps
    `section.field` to a starting value (from the link or the data's preset); fields without one
    start at the params class's default; a start value its widget cannot hold (a link's) is replaced by
    `fallback`'s value for the path, else the default, with the link warning. Plain fields sit in a grid of
    `columns`; schedulable ones get a schedule editor across the width, and their curves come back for the preview;
    a section of several kinds gets its editor across the width too. `context`: see the module's docstring.
    """
    values, curves, grid = {}, {}, []
    for control in field_controls(params):
        name = control.name
        if names is not None and name not in names:
            continue
        path = f"{section}.{name}"
        start, default = defaults.get(path, control.default), (fallback or {}).get(path, control.default)
        if control.kind == "schedule":
            start = link_start(path, start, _holds(control, start), default, f"{key}.{name}")
            values[name], curve = schedule_editor(control, start, f"{key}.{name}", epochs)
            if curve is not None:
                curves[name] = curve
            errors.slot(path)
            continue
        if control.kind == "variants":
            values[name] = control_widget(control, start, f"{key}.{name}", path, default, context)
            errors.slot(path)
            continue
        grid = grid or list(st.columns(columns))
        with grid.pop(0):
            values[name] = control_widget(control, start, f"{key}.{name}", path, default, context)
            errors.slot(path)
    return values, curves


def schedule_editor(control: FieldControl, value: Any, key: str, epochs: int) -> tuple[Any, list[float] | None]:
    """Kind and numbers of a schedulable coefficient; returns its config value and its curve over `epochs`."""
    start = schedule_start(value)
    first = first_value(start)
    st.markdown(f"**{control.label}**", help=control.help)
    cols = st.columns([2.2, 1.2, 1, 1, 1])
    kind = cols[0].selectbox(
        "schedule",
        SCHEDULE_KINDS,
        index=SCHEDULE_KINDS.index(start["kind"]),
        key=f"{key}.kind",
        help="how the value moves over epochs",
    )
    same = start if start["kind"] == kind else {}
    k = f"{key}.{kind}"
    if kind == "constant":
        out: Any = cols[1].number_input("value", value=first, step=_step(first), format="%g", key=f"{k}.value")
    elif kind in ("linear", "cosine"):
        out = {
            "kind": kind,
            "start": cols[1].number_input("start", value=float(same.get("start", first)), format="%g", key=f"{k}.s"),
            "end": cols[2].number_input("end", value=float(same.get("end", first)), format="%g", key=f"{k}.e"),
            "start_epoch": cols[3].number_input(
                "from", value=int(same.get("start_epoch", 0)), key=f"{k}.se", help="epoch where the ramp begins"
            ),
            "end_epoch": cols[4].number_input(
                "until",
                value=same.get("end_epoch"),
                step=1,
                key=f"{k}.ee",
                placeholder="last",
                help="epoch where the ramp ends; blank: the last epoch",
            ),
        }
    elif kind == "step":
        milestones = cols[3].text_input(
            "milestones",
            value=yaml_text(same.get("milestones", [max(epochs // 2, 1)])),
            key=f"{k}.m",
            help="epochs at which the value is multiplied by gamma, e.g. 10, 20",
        )
        out = {
            "kind": "step",
            "start": cols[1].number_input("start", value=float(same.get("start", first)), format="%g", key=f"{k}.s"),
            "gamma": cols[2].number_input("gamma", value=float(same.get("gamma", 0.5)), format="%g", key=f"{k}.g"),
            "milestones": parse_yaml_text(milestones),
        }
    else:
        text = cols[1].text_input(
            "epoch: value, ...",
            value=points_text(same.get("points", [[0, first]])),
            key=f"{k}.p",
            help="each value holds from its epoch until the next one, e.g. 0: 8, 10: 4, 20: 1",
        )
        out = {"kind": "list", "points": parse_points(text)}
    return out, schedule_preview(out, epochs)
