"""Tune while it trains, in a notebook: a slider for each of a running run's params that take a schedule and for
its lr, and Apply, which asks the run to take the moved values from its next logged step (kdlib.tuning)."""

from __future__ import annotations

import html
import math

import ipywidgets as W

from kdlib.runner import RunHandle
from kdlib.tuning import LR, TUNABLE_STATUSES, TuningRefused, lr_choices, slider_range

from .common import LABEL, error_html


class TuningPanel(W.VBox):
    """Sliders over a running or paused run's tunable fields, starting at its values now, and Apply
    (`RunHandle.set`); empty for a run that is not running or paused. `refresh()` follows the run: a slider the
    user has not moved follows the run's value (a schedule moves it, an applied change sets it)."""

    def __init__(self, run: RunHandle, refresh: bool = True) -> None:
        self.handle = run
        self.sliders: dict[str, W.ValueWidget] = {}
        self.started: dict[str, float] = {}  # each slider's value when the run last set it
        self.apply = W.Button(description="Apply", icon="check", layout=W.Layout(width="100px"),
                              tooltip="the run takes the moved values from its next logged step")
        self.apply.on_click(lambda _: self.submit())
        self.message = W.HTML()
        super().__init__([])
        if refresh:
            self.refresh()

    def refresh(self, status: str | None = None) -> None:
        status = status or self.handle.status
        store, run_id = self.handle.store, self.handle.run_id
        spec = store.tunables(run_id) if status in TUNABLE_STATUSES else {"tunable": {}}
        if not spec["tunable"]:
            self.children = ()
            return
        for path, value in store.tuned_values(run_id).items():
            if path not in self.sliders:
                self.sliders[path] = _slider(path, spec["tunable"][path], value)
                self.started[path] = self.sliders[path].value
            elif math.isclose(self.sliders[path].value, value):
                self.started[path] = self.sliders[path].value  # the run has the value the user moved it to
            elif self.sliders[path].value == self.started[path]:
                _move(self.sliders[path], path, spec["tunable"][path], value)
                self.started[path] = self.sliders[path].value
        if not self.children:
            title = W.HTML("<b>Tune while it trains</b>")
            self.children = (title, W.HBox(list(self.sliders.values())), W.HBox([self.apply, self.message]))

    def submit(self) -> dict[str, float]:
        """Ask the run for the moved values; returns what was asked ({} when nothing moved or it was refused)."""
        asked = {p: s.value for p, s in self.sliders.items() if not math.isclose(s.value, self.started[p])}
        if not asked:
            self.message.value = "&nbsp;move a slider first"
            return {}
        try:
            values = self.handle.set(asked)
        except TuningRefused as error:
            self.message.value = error_html(str(error).splitlines())
            return {}
        shown = ", ".join(f"{path} = {value:g}" for path, value in values.items())
        self.message.value = f"&nbsp;asked {html.escape(shown)}: from the run's next logged step"
        return values


def _slider(path: str, bounds: dict, value: float) -> W.ValueWidget:
    if path == LR:
        slider = W.SelectionSlider(options=[value], description="lr", style=LABEL, continuous_update=False)
    else:
        slider = W.FloatSlider(description=path.removeprefix("method."), style=LABEL, readout_format=".3g",
                               continuous_update=False)
    _move(slider, path, bounds, value)
    return slider


def _move(slider: W.ValueWidget, path: str, bounds: dict, value: float) -> None:
    """Put a slider at `value`, its ends (or choices, for the lr) around it."""
    if path == LR:
        options = lr_choices(value)
        slider.options = [(f"{option:.3g}", option) for option in options]
        slider.value = min(options, key=lambda option: abs(math.log(option / value)))
        return
    low, high = slider_range(bounds, value)
    with slider.hold_trait_notifications():
        slider.max, slider.min = max(high, slider.min), low
        slider.max, slider.step = high, (high - low) / 200
        slider.value = min(max(value, low), high)
