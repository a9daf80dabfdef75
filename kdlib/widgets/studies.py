"""A sweep's trials side by side, in a notebook."""

from __future__ import annotations

import html

import ipywidgets as W
import pandas as pd

from kdlib import viz
from kdlib.store import RunStore
from kdlib.views import best_trial, searched_params, study_curves, study_summary

from .common import LABEL, figure_widget, sync_figure


class StudyView(W.VBox):
    """A sweep's trials side by side: the table of params, states and values, each param against the value,
    and each trial's curve of a metric (pruned trials dashed). `refresh()` reads the store again."""

    def __init__(self, study: str | None = None, home: str | None = None, metric: str | None = None) -> None:
        self.store = RunStore(home)
        studies = self.store.studies()
        if not studies:
            raise ValueError(f"no studies in {self.store.home} yet; run `python -m kdlib sweep CONFIG --search ...`")
        self.study = W.Dropdown(options=studies, value=study or studies[0], description="study", style=LABEL)
        self.metric = W.Dropdown(description="curves of", style=LABEL)
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
