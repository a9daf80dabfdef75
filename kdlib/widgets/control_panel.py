"""The control panel: data, method and its coefficients, epochs and seed, Launch; and the panel composed
with a live view of the run it launched."""

from __future__ import annotations

import copy
import html
from collections.abc import Callable
from typing import Any

import ipywidgets as W

from kdlib import viz
from kdlib.config import ConfigError
from kdlib.controls import field_controls, first_value, route_choices, schedule_start
from kdlib.methods import METHODS
from kdlib.registry import summary
from kdlib.runner import RunHandle, launch
from kdlib.store import RunStore
from kdlib.validation import config_from

from .common import LABEL, error_html, figure_widget, sync_figure
from .fields import VariantsEditor, field_widget, slider_range, widget_value
from .live import LiveView
from .schedule_editor import ScheduleEditor

# Starting recipes per embedded dataset (no download): models that suit its shape, and a run of
# seconds (toy2d) to a minute (mnist1d, digits) on a CPU. The panel's widgets override the
# method, epochs and seed; pass your own `presets` to change the rest.
PRESETS: dict[str, dict] = {
    "toy2d": {
        "data": {"name": "toy2d", "shape": "moons", "n_samples": 2000, "noise": 0.25, "label_noise": 0.1},
        "student": {"name": "mlp", "hidden": [4]},
        "teacher": {"model": {"name": "mlp", "hidden": [64, 64]}, "epochs": 20, "optimizer": {"lr": 0.01}},
        "epochs": 30,
        "batch_size": 64,
        "optimizer": {"name": "adam", "lr": 0.01},
        "probes": {"log_every": 5},
    },
    "mnist1d": {
        "data": {"name": "mnist1d", "n_samples": 6000},
        "student": {"name": "mlp", "hidden": [128]},
        "teacher": {"model": {"name": "cnn1d", "channels": [32, 32, 32]}, "epochs": 15, "optimizer": {"lr": 0.003}},
        "epochs": 15,
        "batch_size": 128,
        "optimizer": {"name": "adam", "lr": 0.003},
    },
    "digits": {
        "data": {"name": "digits"},
        "student": {"name": "mlp", "hidden": [32]},
        "teacher": {"model": {"name": "cnn2d", "channels": [16, 32]}, "epochs": 30, "optimizer": {"lr": 0.003}},
        "epochs": 30,
        "batch_size": 64,
        "optimizer": {"name": "adam", "lr": 0.003},
        "probes": {"log_every": 5},
    },
}


def _merge(base: dict, changes: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class ControlPanel(W.VBox):
    """Data, method and its coefficients (schedules with a preview), epochs and seed; Launch.

    The method's fields come from its `Params` class, with their descriptions as tooltips, so a new
    method appears here with no widget code. `launch()` (the button) validates the config once and
    starts a background run, or lists what is wrong beside the form; `on_launch(fn)` hears of each run.
    """

    def __init__(
        self,
        method: str = "kd",
        data: str = "toy2d",
        presets: dict[str, dict] | None = None,
        home: str | None = None,
    ) -> None:
        self.presets = copy.deepcopy(presets or PRESETS)
        self.store = RunStore(home)
        self.handle: RunHandle | None = None
        self.editors: dict[str, ScheduleEditor] = {}
        self.fields: dict[str, W.Widget] = {}
        self._listeners: list[Callable[[RunHandle], None]] = []

        self.data = W.Dropdown(
            options=list(self.presets),
            value=data if data in self.presets else next(iter(self.presets)),
            description="data",
            style=LABEL,
        )
        self.method = W.Dropdown(options=METHODS.names(), value=method, description="method", style=LABEL)
        self.epochs = W.BoundedIntText(1, min=1, max=100_000, description="epochs", style=LABEL)
        self.teacher_epochs = W.BoundedIntText(
            1, min=1, max=100_000, description="teacher epochs", style={"description_width": "110px"}
        )
        self.seed = W.IntText(0, description="seed", style=LABEL, tooltip="seed of initialization and batch order")
        self.run_name = W.Text("", placeholder="automatic", description="run name", style=LABEL)
        for w in (self.epochs, self.seed):
            w.layout.width = "200px"
        self.teacher_epochs.layout.width = "220px"
        self.launch_button = W.Button(description="Launch", button_style="primary", icon="play")
        self.launch_button.on_click(self.launch)
        self.message = W.HTML(layout=W.Layout(width="340px", margin="0 0 0 16px"))
        self.method_doc = W.HTML(layout=W.Layout(max_width="640px"))  # the caption wraps, never runs off
        self.params_box = W.VBox()
        self.preview = figure_widget(viz.schedule_figure({}))
        form = W.VBox(
            [
                W.HBox([self.data, self.method]),
                self.method_doc,
                self.params_box,
                W.HBox([self.epochs, self.teacher_epochs, self.seed]),
                W.HBox([self.run_name, self.launch_button]),
            ]
        )
        super().__init__(
            [
                W.HBox([form, self.message]),
                W.HTML("<b>Schedule preview</b>: each coefficient at every epoch"),
                self.preview,
            ]
        )
        self.data.observe(self._data_changed, "value")
        self.method.observe(self._method_changed, "value")
        self.epochs.observe(self._epochs_changed, "value")
        self.teacher_epochs.observe(self._teacher_changed, "value")
        self._data_changed()
        self._method_changed()

    # what the form holds

    @property
    def needs_teacher(self) -> bool:
        return METHODS.get(self.method.value).needs_teacher

    def method_values(self) -> dict[str, Any]:
        values = {name: widget_value(w) for name, w in self.fields.items()}
        return values | {name: editor.value for name, editor in self.editors.items()}

    def config_dict(self) -> dict:
        """The run the form describes, as plain data (not validated yet)."""
        config = copy.deepcopy(self.presets[self.data.value])
        config["method"] = {"name": self.method.value, **self.method_values()}
        config["epochs"], config["seed"] = self.epochs.value, self.seed.value
        if self.needs_teacher:
            config["teacher"] = _merge(config.get("teacher") or {}, {"epochs": self.teacher_epochs.value})
        else:
            config.pop("teacher", None)
        if self.run_name.value.strip():
            config["output"] = _merge(config.get("output") or {}, {"name": self.run_name.value.strip()})
        return config

    def curves(self) -> dict[str, list[float]]:
        return {name: c for name, e in self.editors.items() if (c := e.curve(self.epochs.value)) is not None}

    # actions

    def on_launch(self, callback: Callable[[RunHandle], None]) -> None:
        self._listeners.append(callback)

    def launch(self, _=None) -> RunHandle | None:
        """Validate the form's config and start the run in the background; None (and the errors shown) if invalid."""
        try:
            config = config_from(self.config_dict())
        except (ConfigError, ValueError) as error:
            self.message.value = error_html(str(error).splitlines())
            return None
        self.handle = launch(config, home=self.store.home)
        self.message.value = f"Started <b>{html.escape(config.run_name())}</b><br><code>{self.handle.run_id}</code>"
        for callback in self._listeners:
            callback(self.handle)
        return self.handle

    # reactions

    def _data_changed(self, _=None) -> None:
        preset = self.presets[self.data.value]
        self.epochs.value = preset.get("epochs", 20)
        self.teacher_epochs.value = (preset.get("teacher") or {}).get("epochs", 20)

    def _method_changed(self, _=None) -> None:
        entry = METHODS.get(self.method.value)
        self.method_doc.value = f"<i>{html.escape(summary(entry))}</i>"
        self.editors, self.fields = {}, {}
        for control in field_controls(entry.Params):
            if control.kind == "schedule":
                first = first_value(schedule_start(control.default))
                editor = ScheduleEditor(
                    control.name,
                    control.default,
                    self.epochs.value,
                    control.help or "",
                    bounds=slider_range(control, first),
                    preview=False,
                )
                editor.on_change(self._schedule_changed)
                self.editors[control.name] = editor
            else:
                self.fields[control.name] = field_widget(control, self.context())
        self.params_box.children = [*self.fields.values(), *self.editors.values()]
        self.teacher_epochs.layout.display = None if entry.needs_teacher else "none"
        self._schedule_changed()

    def context(self) -> dict:
        """What the method's fields may offer beyond their params: the teacher's saved epochs (its route)."""
        teacher = self.presets[self.data.value].get("teacher") or {}
        return {"teacher_route": route_choices(self.teacher_epochs.value, teacher.get("route"))}

    def _teacher_changed(self, _=None) -> None:
        for widget in self.fields.values():
            if isinstance(widget, VariantsEditor):
                widget.set_context(self.context())

    def _epochs_changed(self, _=None) -> None:
        for editor in self.editors.values():
            editor.epochs = max(self.epochs.value, 1)  # what its curve() covers; the panel draws the preview
        self._schedule_changed()

    def _schedule_changed(self, _=None) -> None:
        sync_figure(self.preview, viz.schedule_figure(self.curves()))


class Panel(W.VBox):
    """The control panel with, below it, the live view of the run it last launched."""

    def __init__(self, controls: ControlPanel) -> None:
        self.controls, self.live = controls, None
        self.live_box = W.VBox()
        super().__init__([controls, self.live_box])
        controls.on_launch(self._launched)

    def _launched(self, handle: RunHandle) -> None:
        if self.live is not None:
            self.live.stop_following()
        self.live = LiveView(handle)
        self.live_box.children = [self.live]


def panel(method: str = "kd", data: str = "toy2d", presets: dict[str, dict] | None = None, home: str | None = None):
    """The control panel and a live view of each run it launches, in one widget."""
    return Panel(ControlPanel(method=method, data=data, presets=presets, home=home))
