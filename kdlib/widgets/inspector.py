"""The sample inspector: one sample's values at an epoch and the trajectory of one value over the epochs."""

from __future__ import annotations

import html

import ipywidgets as W
import numpy as np
import pandas as pd

from kdlib import viz
from kdlib.views import declared_keys, load_run, run_values, value_label

from .common import LABEL, figure_widget, sync_figure


class SampleInspector(W.VBox):
    """One sample of a run: its per-sample values at an epoch (a table) and the trajectory of one value
    over the epochs, beside the mean over all samples of the split. Values are offered by their declared
    labels (`kdlib.views.run_values`), declared ones first. Works on live and finished runs (`reload()`
    picks up new epochs)."""

    def __init__(
        self, run_id: str | None = None, home: str | None = None, split: str = "train", index: int = 0, key: str = ""
    ) -> None:
        self.run = load_run(run_id, home)
        self.values = run_values(self.run.store, self.run.run_id)
        self.split = W.Dropdown(description="split", style=LABEL, layout=W.Layout(width="200px"))
        self.epoch = W.IntSlider(description="epoch", continuous_update=False, style=LABEL)
        self.index = W.BoundedIntText(0, min=0, max=0, description="sample", style=LABEL)
        self.index.layout.width = "200px"
        self.key = W.Dropdown(description="value", style=LABEL)
        self.extremes = W.Dropdown(
            description="jump to", style=LABEL, tooltip="the samples with the lowest and highest value at this epoch"
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
        floats = [c for c in frame.columns if frame[c].dtype.kind == "f"] or list(frame.columns)
        declared = declared_keys(self.values, floats)
        keys = declared + [k for k in floats if k not in declared]
        wanted = key or self.key.value
        self.key.options = [(self.label(k), k) for k in keys]
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
            f"<tr><td title='{html.escape(k)}'>{html.escape(self.label(k))}</td>"
            f"<td style='text-align:right'>{f'{v:.4g}' if isinstance(v, float) else v}</td></tr>"
            for k, v in row.items()
        )
        self.table.value = (
            f"<b>sample {index}</b> of {self.split.value}, epoch {self.epoch.value}"
            f"<table style='margin-top:4px'>{cells}</table>"
        )
        order = frame[key].sort_values(kind="stable")
        picks = [*order.index[:5], *order.index[-5:]]
        self._busy = True
        label = self.label(key)
        self.extremes.options = [("", None)] + [(f"{i}  ({label} = {order[i]:.3g})", int(i)) for i in picks]
        self.extremes.value = None
        self._busy = False
        curves = {
            f"sample {index}": self.run.trajectory(index, key, self.split.value).rename(label).to_frame(),
            f"mean over the {self.split.value} split": self.mean_trajectory(key).rename(label).to_frame(),
        }
        fig = viz.compare_curves_figure(curves, label, title=f"{label} of sample {index} over the epochs")
        fig.add_vline(x=self.epoch.value, line_dash="dot", line_color="grey")
        sync_figure(self.figure, fig)

    def label(self, key: str) -> str:
        return value_label(self.values, key)

    def mean_trajectory(self, key: str) -> pd.Series:
        values = {}
        for epoch in self.run.epochs:
            arrays = self.run.arrays(epoch, self.split.value)
            if key in arrays:
                values[epoch] = float(np.asarray(arrays[key], dtype=np.float64).mean())
        return pd.Series(values, name=key, dtype=float).rename_axis("epoch")
