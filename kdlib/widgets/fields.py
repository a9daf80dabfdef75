"""Ipywidgets for config fields, rendered from their `kdlib.controls.FieldControl`s: a widget per kind, a section
of several kinds as a `VariantsEditor` (RCO's anchors), a list of a teacher's epochs as a pick of its saved ones."""

from __future__ import annotations

import html
import math
from typing import Any

import ipywidgets as W

from kdlib.config import parse_yaml_text, yaml_text
from kdlib.controls import FieldControl

from .common import LABEL

_DEFAULT = object()


def slider_range(control: FieldControl, default: float) -> tuple[float, float, float]:
    """(low, high, step) of a coefficient's slider: above 0 where 0 is refused (a temperature), up to 1
    where more is refused (a probability), else up to twice the default (20 for a temperature)."""
    low = 0.0 if control.accepts(0.0) else 0.1
    if not control.accepts(1.5):
        high = 1.0
    else:
        high = 20.0 if control.name == "temperature" else float(max(1, math.ceil(2 * default)))
    return low, high, 0.05 if high <= 5 else 0.1


def field_widget(control: FieldControl, context: dict | None = None, value: Any = _DEFAULT) -> W.Widget:
    """A widget for a plain (not schedulable) field, by its kind, at `value` (default: the field's); its help is
    the tooltip. `context` carries what the form knows beyond the params (`teacher_route`: the saved epochs)."""
    value = control.default if value is _DEFAULT else value
    common = {"description": control.label, "tooltip": control.help, "style": LABEL}
    if control.kind == "variants":
        return VariantsEditor(control, value, context)
    if control.kind == "list" and (choices := (context or {}).get(control.choices_from)):
        picked = [v for v in value if isinstance(v, int)] if isinstance(value, list) else []
        options = sorted(set(choices) | set(picked))
        return W.SelectMultiple(options=options, value=picked, rows=min(len(options), 6), **common)
    if control.kind == "choice" and not control.optional:
        return W.Dropdown(options=list(control.choices), value=value, **common)
    if control.kind == "boolean" and not control.optional:
        return W.Checkbox(value=bool(value), **common)
    if control.kind == "number" and not control.optional:
        low, high, step = slider_range(control, value)
        return W.FloatSlider(value=value, min=low, max=high, step=step, continuous_update=False, **common)
    if control.kind == "integer" and not control.optional:
        return W.IntText(value=value, **common)
    # anything else (a list, a section, a field that may be None) is typed as YAML
    return W.Text(value=yaml_text(control.plain(value)), placeholder="YAML", **common)


def widget_value(widget: W.Widget) -> Any:
    if isinstance(widget, W.Text):
        return parse_yaml_text(widget.value)
    return sorted(widget.value) if isinstance(widget, W.SelectMultiple) else widget.value


class VariantsEditor(W.VBox):
    """A section of several kinds (RCO's anchors: evenly spaced, chosen epochs, greedy): a dropdown of the kinds,
    then the chosen kind's own fields. `value` is the section as plain data; `set_context` offers other saved
    epochs (a teacher trained longer) and keeps what is set."""

    def __init__(self, control: FieldControl, value: Any = None, context: dict | None = None) -> None:
        self.control, self.context = control, dict(context or {})
        self.kind = W.Dropdown(
            options=[(v.label, v.kind) for v in control.variants],
            description=control.label,
            tooltip=control.help,
            style=LABEL,
        )
        self.help = W.HTML()
        self.fields: dict[str, W.Widget] = {}
        self.fields_box = W.HBox()
        super().__init__([W.HBox([self.kind, self.help]), self.fields_box])
        start = control.variant_start(control.default if value is None else value)
        self.kind.value = start["kind"]
        self._show(start)
        self.kind.observe(lambda _: self._show({}), "value")

    @property
    def value(self) -> dict:
        return {"kind": self.kind.value, **{name: widget_value(w) for name, w in self.fields.items()}}

    def set_context(self, context: dict) -> None:
        self.context = dict(context)
        self._show(self.value)

    def _show(self, start: dict) -> None:
        variant = self.control.variant(self.kind.value)
        self.help.value = f"<i>{html.escape(variant.help)}</i>"
        self.fields = {
            sub.name: field_widget(sub, self.context, start.get(sub.name, sub.plain(sub.default)))
            for sub in variant.fields
        }
        self.fields_box.children = list(self.fields.values())
