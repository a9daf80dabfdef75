"""The schedule editor: one coefficient that may change over epochs, a kind and its numbers, with a preview."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as W

from kdlib import viz
from kdlib.config import parse_yaml_text, yaml_text
from kdlib.controls import (
    SCHEDULE_KINDS,
    first_value,
    parse_points,
    points_text,
    schedule_preview,
    schedule_start,
)
from kdlib.schedules import schedule_curve

from .common import LABEL, error_html, figure_widget, sync_figure


class ScheduleEditor(W.VBox):
    """One coefficient that may change over epochs: a kind and its numbers, with a preview.

    `value` is what goes into the config (a number, or a mapping with a `kind`); `curve()` its value
    at every epoch. Bounds are checked when the config is validated, so the editor shows, then the
    panel refuses, a schedule that leaves them.
    """

    def __init__(
        self,
        name: str = "temperature",
        value: Any = 4.0,
        epochs: int = 20,
        description: str = "",
        bounds: tuple[float, float, float] = (0.1, 20.0, 0.1),
        preview: bool = True,
    ) -> None:
        self.name, self.epochs, self._listeners, self._quiet = name, max(int(epochs), 1), [], True
        low, high, step = bounds

        def slider(label: str) -> W.FloatSlider:
            return W.FloatSlider(
                min=low, max=high, step=step, description=label, tooltip=description, continuous_update=False
            )

        self.kind = W.Dropdown(options=SCHEDULE_KINDS, description=name, tooltip=description, style=LABEL)
        self.kind.layout.width = "230px"
        self.value_slider, self.start, self.end = slider("value"), slider("start"), slider("end")
        for w in (self.value_slider, self.start, self.end):
            w.layout.width = "270px"
        self.start_epoch = W.BoundedIntText(0, min=0, max=100_000, description="from epoch")
        self.end_epoch = W.Text("", placeholder="last", description="to epoch", tooltip="blank: the last epoch")
        self.gamma = W.FloatText(0.5, description="gamma", tooltip="factor applied at each milestone")
        self.milestones = W.Text("10", description="milestones", tooltip="epochs at which the value is multiplied")
        self.points = W.Text("0: 8, 10: 4", description="epoch: value", tooltip="each value holds until the next")
        for w in (self.start_epoch, self.end_epoch, self.gamma, self.milestones, self.points):
            w.layout.width = "170px"
        self.fields = W.HBox()
        self.error = W.HTML()
        self.preview = figure_widget(viz.schedule_figure({name: schedule_curve(4.0, self.epochs)})) if preview else None
        super().__init__([W.HBox([self.kind, self.fields]), self.error, *([self.preview] if preview else [])])
        for w in (self.kind, self.value_slider, self.start, self.end, self.start_epoch, self.end_epoch, self.gamma):
            w.observe(self._changed, "value")
        for w in (self.milestones, self.points):
            w.observe(self._changed, "value")
        self.value = value

    @property
    def value(self) -> Any:
        kind = self.kind.value
        if kind == "constant":
            return self.value_slider.value
        if kind in ("linear", "cosine"):
            end = self.end_epoch.value.strip()
            return {
                "kind": kind,
                "start": self.start.value,
                "end": self.end.value,
                "start_epoch": self.start_epoch.value,
                "end_epoch": parse_yaml_text(end) if end else None,
            }
        if kind == "step":
            return {
                "kind": "step",
                "start": self.start.value,
                "gamma": self.gamma.value,
                "milestones": parse_yaml_text(self.milestones.value),
            }
        return {"kind": "list", "points": parse_points(self.points.value)}

    @value.setter
    def value(self, value: Any) -> None:
        value = schedule_start(value)
        first = first_value(value)
        self._quiet = True  # one redraw for the whole change, not one per field
        try:
            self.value_slider.value = self.start.value = self.end.value = float(first)
            if "end" in value:
                self.end.value = float(value["end"])
            self.start_epoch.value = int(value.get("start_epoch", 0))
            self.end_epoch.value = "" if value.get("end_epoch") is None else str(value["end_epoch"])
            self.gamma.value = float(value.get("gamma", 0.5))
            self.milestones.value = yaml_text(value.get("milestones", [max(self.epochs // 2, 1)])).strip("[]")
            if value.get("points"):
                self.points.value = points_text(value["points"])
            self.kind.value = value["kind"]
        finally:
            self._quiet = False
        self._changed()

    def curve(self, epochs: int | None = None) -> list[float] | None:
        """The value at every epoch, or None while the numbers do not make a schedule."""
        return schedule_preview(self.value, epochs or self.epochs)

    def set_epochs(self, epochs: int) -> None:
        self.epochs = max(int(epochs), 1)
        self._changed()

    def on_change(self, callback: Callable[[ScheduleEditor], None]) -> None:
        self._listeners.append(callback)

    def _changed(self, _=None) -> None:
        if self._quiet:
            return
        kind = self.kind.value
        self.fields.children = {
            "constant": [self.value_slider],
            "linear": [self.start, self.end, self.start_epoch, self.end_epoch],
            "cosine": [self.start, self.end, self.start_epoch, self.end_epoch],
            "step": [self.start, self.gamma, self.milestones],
            "list": [self.points],
        }[kind]
        curve = self.curve()
        self.error.value = "" if curve is not None else error_html([f"{self.name}: these numbers make no {kind}"])
        if curve is not None and self.preview is not None:
            sync_figure(self.preview, viz.schedule_figure({self.name: curve}))
        for callback in self._listeners:
            callback(self)
