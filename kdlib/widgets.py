"""Jupyter widgets over the store: a control panel that launches runs, a live view of a run's curves,
a sample inspector, a schedule editor and a sweep's trials.

    from kdlib import widgets
    widgets.panel()                      # choose data, method, coefficients; Launch; watch it live
    widgets.LiveView(run_id)             # curves of any run, live or finished
    widgets.SampleInspector(run_id)      # one sample's values at an epoch, and its trajectory
    widgets.ScheduleEditor("temperature", 4.0, epochs=20)
    widgets.StudyView("my-study")        # a sweep's trials: params, values, curves (pruned dashed)

Like the app, the widgets only read the store and arrange `kdlib.viz` figures (as plotly
`FigureWidget`s whose traces are updated in place); runs go through `kdlib.runner`. The live view
polls the store from a background thread, so the kernel stays free while a run trains.
"""

from __future__ import annotations

import copy
import html
import math
import sys
import threading
import typing
from collections.abc import Callable
from typing import Any, Literal

import ipywidgets as W
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from pydantic import BaseModel, TypeAdapter, ValidationError

from kdlib import viz
from kdlib.config import ConfigError, parse_yaml_text, yaml_text
from kdlib.methods import METHODS
from kdlib.runner import RunHandle, launch
from kdlib.schedules import Schedule, schedule_curve
from kdlib.store import ACTIVE, RunStore
from kdlib.validation import config_from
from kdlib.views import best_trial, load_run, searched_params, study_curves, study_summary, teacher_run_id

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

KINDS = ("constant", "linear", "cosine", "step", "list")
_LABEL = {"description_width": "90px"}


# --- figures as widgets ------------------------------------------------------------------------------


def figure_widget(fig: go.Figure) -> go.FigureWidget:
    return go.FigureWidget(fig)


def sync_figure(widget: go.FigureWidget, fresh: go.Figure) -> None:
    """Make `widget` show `fresh`: traces with the same names get their data updated in place (no redraw
    from scratch); otherwise the traces are replaced. The layout follows `fresh` (titles, marks)."""
    same = [t.name for t in widget.data] == [t.name for t in fresh.data]
    with widget.batch_update():
        if same:
            for old, new in zip(widget.data, fresh.data, strict=True):
                old.update({k: v for k, v in new.to_plotly_json().items() if k not in ("type", "uid")})
        else:
            widget.data = []
            widget.add_traces(list(fresh.data))
    layout = fresh.layout.to_plotly_json()
    if layout != getattr(widget, "_kdlib_layout", None):  # assigning the layout redraws axes and drops the zoom
        # the browser merges a new layout into the old one: first remove what is gone (an "empty" note)
        gone = set(widget.layout.to_plotly_json()) - set(layout)
        if gone:
            widget.plotly_relayout({key: None for key in gone})
        widget.layout, widget._kdlib_layout = fresh.layout, layout


# --- fields of a params class --------------------------------------------------------------------------


def _accepts(params: type[BaseModel], field: str, value: Any) -> bool:
    """Whether `field` may take `value` (other fields at their defaults): how sliders find their bounds."""
    try:
        params.model_validate({field: value})
    except ValidationError as error:
        return all(tuple(e["loc"][:1]) != (field,) for e in error.errors())
    return True


def slider_range(params: type[BaseModel], field: str, default: float) -> tuple[float, float, float]:
    """(low, high, step) of a coefficient's slider: above 0 where 0 is refused (a temperature), up to 1
    where more is refused (a probability), else up to twice the default (20 for a temperature)."""
    low = 0.0 if _accepts(params, field, 0.0) else 0.1
    if not _accepts(params, field, 1.5):
        high = 1.0
    else:
        high = 20.0 if field == "temperature" else float(max(1, math.ceil(2 * default)))
    return low, high, 0.05 if high <= 5 else 0.1


def is_schedulable(info) -> bool:
    return bool((info.json_schema_extra or {}).get("schedulable"))


def field_widget(params: type[BaseModel], name: str) -> W.Widget:
    """A widget for a plain (not schedulable) field, by its type; its description is the tooltip."""
    info = params.model_fields[name]
    default = info.get_default(call_default_factory=True)
    common = {"description": name, "tooltip": info.description, "style": _LABEL}
    if typing.get_origin(info.annotation) is Literal:
        return W.Dropdown(options=list(typing.get_args(info.annotation)), value=default, **common)
    if info.annotation is bool:
        return W.Checkbox(value=bool(default), **common)
    if info.annotation is float:
        low, high, step = slider_range(params, name, default)
        return W.FloatSlider(value=default, min=low, max=high, step=step, continuous_update=False, **common)
    if info.annotation is int:
        return W.IntText(value=default, **common)
    if isinstance(default, BaseModel):  # a nested section (RCO's anchors): its plain data as YAML
        default = default.model_dump(mode="json")
    return W.Text(value=yaml_text(default), placeholder="YAML", **common)


def widget_value(widget: W.Widget) -> Any:
    return parse_yaml_text(widget.value) if isinstance(widget, W.Text) else widget.value


# --- schedule editor -----------------------------------------------------------------------------------


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

        self.kind = W.Dropdown(options=KINDS, description=name, tooltip=description, style=_LABEL)
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
        points = parse_yaml_text(f"{{{self.points.value}}}")
        return {"kind": "list", "points": [[e, v] for e, v in points.items()] if isinstance(points, dict) else points}

    @value.setter
    def value(self, value: Any) -> None:
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        if isinstance(value, int | float):
            value = {"kind": "constant", "value": float(value)}
        elif isinstance(value, list):
            value = {"kind": "list", "points": value}
        first = value.get("value", value.get("start", (value.get("points") or [[0, 1.0]])[0][1]))
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
                self.points.value = ", ".join(f"{int(e)}: {float(v):g}" for e, v in value["points"])
            self.kind.value = value["kind"]
        finally:
            self._quiet = False
        self._changed()

    def curve(self, epochs: int | None = None) -> list[float] | None:
        """The value at every epoch, or None while the numbers do not make a schedule."""
        try:
            schedule = TypeAdapter(Schedule).validate_python(
                {"kind": "constant", "value": self.value} if self.kind.value == "constant" else self.value
            )
        except (ValidationError, TypeError, ValueError):
            return None
        return schedule_curve(schedule, max(int(epochs or self.epochs), 1))

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
        self.error.value = "" if curve is not None else _error_html([f"{self.name}: these numbers make no {kind}"])
        if curve is not None and self.preview is not None:
            sync_figure(self.preview, viz.schedule_figure({self.name: curve}))
        for callback in self._listeners:
            callback(self)


# --- control panel -------------------------------------------------------------------------------------


def _error_html(lines: list[str]) -> str:
    items = "".join(
        f"<li><b>{html.escape(path)}</b>: {html.escape(text)}</li>" if text else f"<li>{html.escape(path)}</li>"
        for path, _, text in (line.partition(": ") for line in lines)
    )
    return f"<div style='color:#b00020'><b>Not started:</b><ul style='margin:2px 0 0 16px;padding:0'>{items}</ul></div>"


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
            style=_LABEL,
        )
        self.method = W.Dropdown(options=METHODS.names(), value=method, description="method", style=_LABEL)
        self.epochs = W.BoundedIntText(1, min=1, max=100_000, description="epochs", style=_LABEL)
        self.teacher_epochs = W.BoundedIntText(
            1, min=1, max=100_000, description="teacher epochs", style={"description_width": "110px"}
        )
        self.seed = W.IntText(0, description="seed", style=_LABEL, tooltip="seed of initialization and batch order")
        self.run_name = W.Text("", placeholder="automatic", description="run name", style=_LABEL)
        for w in (self.epochs, self.seed):
            w.layout.width = "200px"
        self.teacher_epochs.layout.width = "220px"
        self.launch_button = W.Button(description="Launch", button_style="primary", icon="play")
        self.launch_button.on_click(self.launch)
        self.message = W.HTML(layout=W.Layout(width="340px", margin="0 0 0 16px"))
        self.method_doc = W.HTML()
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
            self.message.value = _error_html(str(error).splitlines())
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
        params = entry.Params
        self.method_doc.value = f"<i>{html.escape(_first_line(entry))}</i>"
        self.editors, self.fields = {}, {}
        for name, info in params.model_fields.items():
            if name == "name":
                continue
            if is_schedulable(info):
                default = info.get_default(call_default_factory=True)
                first = float(default if isinstance(default, int | float) else schedule_curve(default, 1)[0])
                editor = ScheduleEditor(
                    name,
                    default,
                    self.epochs.value,
                    info.description or "",
                    bounds=slider_range(params, name, first),
                    preview=False,
                )
                editor.on_change(self._schedule_changed)
                self.editors[name] = editor
            else:
                self.fields[name] = field_widget(params, name)
        self.params_box.children = [*self.fields.values(), *self.editors.values()]
        self.teacher_epochs.layout.display = None if entry.needs_teacher else "none"
        self._schedule_changed()

    def _epochs_changed(self, _=None) -> None:
        for editor in self.editors.values():
            editor.epochs = max(self.epochs.value, 1)  # what its curve() covers; the panel draws the preview
        self._schedule_changed()

    def _schedule_changed(self, _=None) -> None:
        sync_figure(self.preview, viz.schedule_figure(self.curves()))


def _first_line(entry) -> str:
    return (sys.modules[entry.__module__].__doc__ or "").strip().split("\n")[0]


# --- live view ---------------------------------------------------------------------------------------


class LiveView(W.VBox):
    """A run's loss and accuracy curves (viz.training_curves_figure), kept up to date from the store.

    A background thread polls the store every `interval` seconds and updates the figure's traces in
    place, so the kernel stays free; it stops when the run ends. While a student waits for its teacher
    to train, the teacher's curves are shown. `refresh()` updates once (what the tests call).
    """

    def __init__(
        self, run: str | RunHandle, home: str | None = None, interval: float = 0.5, follow: bool = True
    ) -> None:
        self.handle = run if isinstance(run, RunHandle) else RunHandle(run, RunStore(home))
        self.store, self.run_id, self.interval = self.handle.store, self.handle.run_id, interval
        self.figure = figure_widget(viz.training_curves_figure(pd.DataFrame(), pd.DataFrame()))
        self.status = W.HTML()
        self.progress = W.FloatProgress(0.0, min=0.0, max=1.0, layout=W.Layout(width="240px"))
        self.buttons = {
            action: W.Button(description=action, icon=icon, layout=W.Layout(width="100px"))
            for action, icon in (("pause", "pause"), ("resume", "play"), ("stop", "stop"))
        }
        for action, button in self.buttons.items():
            button.on_click(lambda _, a=action: self.control(a))
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._thread: threading.Thread | None = None
        super().__init__([W.HBox([self.progress, self.status, *self.buttons.values()]), self.figure])
        if self.refresh() in ACTIVE and follow:
            self.start()

    def refresh(self) -> str:
        """Read the store once and update the figure; returns the run's status."""
        with self._lock:
            status = self.handle.status
            info = self.store.run(self.run_id)
            shown, title = self.run_id, info["name"]
            epochs = self.store.epoch_metrics(shown)
            if epochs.empty and status in ACTIVE and (teacher := teacher_run_id(self.store, self.run_id)):
                shown, title = teacher, f"training the teacher first: {self.store.run(teacher)['name']}"
                epochs = self.store.epoch_metrics(shown)
            sync_figure(self.figure, viz.training_curves_figure(self.store.step_metrics(shown), epochs, title=title))
            total = max(self.store.run(shown)["total_epochs"] or 1, 1)
            self.progress.value = min(len(epochs) / total, 1.0)
            error = f"<br><span style='color:#b00020'>{html.escape(info['error'])}</span>" if info["error"] else ""
            phase = "epoch" if shown == self.run_id else "teacher epoch"
            self.status.value = (
                f"&nbsp;<b>{html.escape(info['name'])}</b> · {status} · {phase} {len(epochs)}/{total}"
                f" · <code>{self.run_id}</code>{error}"
            )
            self.buttons["pause"].disabled = status != "running"
            self.buttons["resume"].disabled = status not in ("paused", "stopped", "failed")
            self.buttons["stop"].disabled = status not in ACTIVE
            return status

    def start(self) -> None:
        """Follow the run in a background thread until it ends (or `stop_following()`)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._follow, name=f"kdlib-live-{self.run_id}", daemon=True)
        self._thread.start()

    def stop_following(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def following(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def control(self, action: str) -> None:
        getattr(self.handle, action)()
        if action == "resume":
            self.start()
        self.refresh()

    def _follow(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.refresh() not in ACTIVE:
                    return
            except Exception as error:  # noqa: BLE001 - shown, not raised: nobody would see it in a thread
                self.status.value += f"<br><span style='color:#b00020'>live view stopped: {html.escape(str(error))}"
                return


# --- sample inspector --------------------------------------------------------------------------------


class SampleInspector(W.VBox):
    """One sample of a run: its per-sample values at an epoch (a table) and the trajectory of one value
    over the epochs, beside the mean over all samples of the split. Works on live and finished runs
    (`reload()` picks up new epochs)."""

    def __init__(
        self, run_id: str | None = None, home: str | None = None, split: str = "train", index: int = 0, key: str = ""
    ) -> None:
        self.run = load_run(run_id, home)
        self.split = W.Dropdown(description="split", style=_LABEL, layout=W.Layout(width="200px"))
        self.epoch = W.IntSlider(description="epoch", continuous_update=False, style=_LABEL)
        self.index = W.BoundedIntText(0, min=0, max=0, description="sample", style=_LABEL)
        self.index.layout.width = "200px"
        self.key = W.Dropdown(description="value", style=_LABEL)
        self.extremes = W.Dropdown(
            description="jump to", style=_LABEL, tooltip="the samples with the lowest and highest value at this epoch"
        )
        self.reload_button = W.Button(description="reload", icon="refresh", tooltip="pick up new epochs of a live run")
        self.reload_button.on_click(self.reload)
        self.table = W.HTML(layout=W.Layout(min_width="260px"))
        self.figure = figure_widget(viz.compare_curves_figure({}, "p_true_student"))
        self._busy = False
        super().__init__(
            [
                W.HBox([self.split, self.epoch, self.reload_button]),
                W.HBox([self.index, self.key, self.extremes]),
                W.HBox([self.table, self.figure]),
            ]
        )
        self.reload(split=split, index=index, key=key)
        for w in (self.split, self.epoch, self.index, self.key):
            w.observe(self._changed, "value")
        self.extremes.observe(self._jump, "value")

    def reload(self, _=None, split: str | None = None, index: int | None = None, key: str | None = None) -> None:
        """Read the run's epochs and splits again; keep the current choices where they still exist."""
        epochs = self.run.epochs
        if not epochs:
            self.table.value = "<i>no per-sample values yet: the run has not finished an epoch</i>"
            return
        self._busy = True
        at_end = not self.split.options or self.epoch.value == self.epoch.max  # first load, or following the end
        self.epoch.min, self.epoch.max, self.epoch.min = 0, epochs[-1], epochs[0]  # min <= max at every step
        if at_end or self.epoch.value not in epochs:
            self.epoch.value = epochs[-1]
        splits = [s for s in ("train", "val", "test") if not self.run.samples(epochs[-1], s).empty]
        self.split.options = splits
        self.split.value = split if split in splits else (self.split.value if self.split.value in splits else splits[0])
        self._busy = False
        self._split_changed(index=index, key=key)

    def frame(self) -> pd.DataFrame:
        """The split's per-sample values at the chosen epoch (one row per dataset index)."""
        return self.run.samples(self.epoch.value, self.split.value)

    def _split_changed(self, index: int | None = None, key: str | None = None) -> None:
        self._busy = True
        frame = self.frame()
        keys = [c for c in frame.columns if frame[c].dtype.kind == "f"] or list(frame.columns)
        wanted = key or self.key.value
        self.key.options = keys
        self.key.value = (
            wanted if wanted in keys else next((k for k in ("p_true_student", "p_true") if k in keys), keys[0])
        )
        self.index.max = len(frame) - 1
        self.index.value = min(self.index.value if index is None else index, len(frame) - 1)
        self._busy = False
        self.show()

    def _changed(self, change) -> None:
        if self._busy:
            return
        if change["owner"] is self.split:
            self._split_changed()
        else:
            self.show()

    def _jump(self, change) -> None:
        if change["new"] is not None and not self._busy:
            self.index.value = change["new"]

    def show(self) -> None:
        """Draw the table and the trajectory for the current split, epoch, sample and value."""
        frame, key, index = self.frame(), self.key.value, self.index.value
        row = frame.loc[index]
        cells = "".join(
            f"<tr><td>{html.escape(k)}</td><td style='text-align:right'>{v:.4g}</td></tr>"
            if isinstance(v, float)
            else f"<tr><td>{html.escape(k)}</td><td style='text-align:right'>{v}</td></tr>"
            for k, v in row.items()
        )
        self.table.value = (
            f"<b>sample {index}</b> of {self.split.value}, epoch {self.epoch.value}"
            f"<table style='margin-top:4px'>{cells}</table>"
        )
        order = frame[key].sort_values(kind="stable")
        picks = [*order.index[:5], *order.index[-5:]]
        self._busy = True
        self.extremes.options = [("", None)] + [(f"{i}  ({key} = {order[i]:.3g})", int(i)) for i in picks]
        self.extremes.value = None
        self._busy = False
        curves = {
            f"sample {index}": self.run.trajectory(index, key, self.split.value).to_frame(),
            f"mean over the {self.split.value} split": self.mean_trajectory(key).to_frame(),
        }
        fig = viz.compare_curves_figure(curves, key, title=f"{key} of sample {index} over the epochs")
        fig.add_vline(x=self.epoch.value, line_dash="dot", line_color="grey")
        sync_figure(self.figure, fig)

    def mean_trajectory(self, key: str) -> pd.Series:
        values = {}
        for epoch in self.run.epochs:
            arrays = self.run.arrays(epoch, self.split.value)
            if key in arrays:
                values[epoch] = float(np.asarray(arrays[key], dtype=np.float64).mean())
        return pd.Series(values, name=key, dtype=float).rename_axis("epoch")


# --- sweeps -------------------------------------------------------------------------------------------


class StudyView(W.VBox):
    """A sweep's trials side by side: the table of params, states and values, each param against the value,
    and each trial's curve of a metric (pruned trials dashed). `refresh()` reads the store again."""

    def __init__(self, study: str | None = None, home: str | None = None, metric: str | None = None) -> None:
        self.store = RunStore(home)
        studies = self.store.studies()
        if not studies:
            raise ValueError(f"no studies in {self.store.home} yet; run `python -m kdlib sweep CONFIG --search ...`")
        self.study = W.Dropdown(options=studies, value=study or studies[0], description="study", style=_LABEL)
        self.metric = W.Dropdown(description="curves of", style=_LABEL)
        self.refresh_button = W.Button(description="refresh", icon="refresh", tooltip="read the store again")
        self.summary, self.table = W.HTML(), W.HTML(layout=W.Layout(overflow="auto"))
        self.params_figure = figure_widget(viz.study_params_figure(pd.DataFrame(), []))
        self.curves_figure = figure_widget(viz.compare_curves_figure({}, "val.acc"))
        self.trials = pd.DataFrame()
        super().__init__(
            [
                W.HBox([self.study, self.metric, self.refresh_button]),
                self.summary,
                self.table,
                self.params_figure,
                self.curves_figure,
            ]
        )
        self._wanted_metric = metric
        self.refresh()
        self.study.observe(lambda _: self.refresh(), "value")
        self.metric.observe(lambda _: self.show_curves(), "value")
        self.refresh_button.on_click(lambda _: self.refresh())

    def refresh(self) -> None:
        self.trials = study_summary(self.store, self.study.value)
        if self.trials.empty:
            self.summary.value = f"<i>the runs of study {html.escape(self.study.value)} are no longer in the store</i>"
            return
        trials, params = self.trials, searched_params(self.trials)
        metric, best = trials.metric.iloc[0], best_trial(trials)
        self.summary.value = (
            f"<b>{len(trials)} trials</b>, {trials.direction.iloc[0]} <code>{html.escape(metric)}</code>"
            + (
                f"; best: trial {best.trial}, {best.value:.4f} (run <code>{best.run_id}</code>)"
                if best is not None
                else ""
            )
        )
        columns = ["trial", "state", "value", *params, "status", "epochs_done", "val_acc", "test_acc", "run_id"]
        self.table.value = trials[columns].to_html(index=False, float_format="{:.4g}".format, na_rep="")
        sync_figure(self.params_figure, viz.study_params_figure(trials, params, title=f"{metric} against each param"))
        self.curves = study_curves(self.store, trials)
        metrics = sorted({c for frame in self.curves.values() for c in frame.columns if c != "step"}) or [metric]
        wanted = self.metric.value or self._wanted_metric or metric
        self.metric.options = metrics
        self.metric.value = wanted if wanted in metrics else metrics[0]
        self.show_curves()

    def show_curves(self) -> None:
        if self.trials.empty or self.metric.value is None:
            return
        pruned = [f"trial {t}" for t in self.trials.trial[self.trials.state == "pruned"]]
        fresh = viz.study_curves_figure(
            self.curves, self.metric.value, pruned, title="each trial by epoch (pruned: dashed)"
        )
        sync_figure(self.curves_figure, fresh)


# --- the composed panel ------------------------------------------------------------------------------


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
