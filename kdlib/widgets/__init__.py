"""Jupyter widgets over the store: a control panel that launches runs, a live view of a run's curves,
a sample inspector, a schedule editor and a sweep's trials.

    from kdlib import widgets
    widgets.panel()                      # choose data, method, coefficients; Launch; watch it live
    widgets.LiveView(run_id)             # curves of any run, live or finished
    widgets.SampleInspector(run_id)      # one sample's values at an epoch, and its trajectory
    widgets.ScheduleEditor("temperature", 4.0, epochs=20)
    widgets.StudyView("my-study")        # a sweep's trials: params, values, curves (pruned dashed)
    widgets.TuningPanel(handle)          # sliders that change a running run from its next step (in LiveView too)

Like the app, the widgets only read the store and arrange `kdlib.viz` figures (as plotly
`FigureWidget`s whose traces are updated in place); runs go through `kdlib.runner`. The live view
polls the store from a background thread, so the kernel stays free while a run trains. Fields of a
params class are rendered from `kdlib.controls`, the description the app's forms render too.
"""

from __future__ import annotations

from .common import figure_widget, sync_figure
from .control_panel import PRESETS, ControlPanel, Panel, panel
from .fields import field_widget, slider_range, widget_value
from .inspector import SampleInspector
from .live import LiveView
from .schedule_editor import ScheduleEditor
from .studies import StudyView
from .tuning import TuningPanel

__all__ = [
    "PRESETS",
    "ControlPanel",
    "LiveView",
    "Panel",
    "SampleInspector",
    "ScheduleEditor",
    "StudyView",
    "TuningPanel",
    "field_widget",
    "figure_widget",
    "panel",
    "slider_range",
    "sync_figure",
    "widget_value",
]
