"""Ipywidgets for config fields, rendered from their `kdlib.controls.FieldControl`s."""

from __future__ import annotations

import math
from typing import Any

import ipywidgets as W

from kdlib.config import parse_yaml_text, yaml_text
from kdlib.controls import FieldControl

from .common import LABEL


def slider_range(control: FieldControl, default: float) -> tuple[float, float, float]:
    """(low, high, step) of a coefficient's slider: above 0 where 0 is refused (a temperature), up to 1
    where more is refused (a probability), else up to twice the default (20 for a temperature)."""
    low = 0.0 if control.accepts(0.0) else 0.1
    if not control.accepts(1.5):
        high = 1.0
    else:
        high = 20.0 if control.name == "temperature" else float(max(1, math.ceil(2 * default)))
    return low, high, 0.05 if high <= 5 else 0.1


def field_widget(control: FieldControl) -> W.Widget:
    """A widget for a plain (not schedulable) field, by its kind; its help is the tooltip."""
    default = control.default
    common = {"description": control.label, "tooltip": control.help, "style": LABEL}
    if control.kind == "choice" and not control.optional:
        return W.Dropdown(options=list(control.choices), value=default, **common)
    if control.kind == "boolean" and not control.optional:
        return W.Checkbox(value=bool(default), **common)
    if control.kind == "number" and not control.optional:
        low, high, step = slider_range(control, default)
        return W.FloatSlider(value=default, min=low, max=high, step=step, continuous_update=False, **common)
    if control.kind == "integer" and not control.optional:
        return W.IntText(value=default, **common)
    # anything else (a list, a section, a field that may be None) is typed as YAML
    return W.Text(value=yaml_text(control.plain(default)), placeholder="YAML", **common)


def widget_value(widget: W.Widget) -> Any:
    return parse_yaml_text(widget.value) if isinstance(widget, W.Text) else widget.value
