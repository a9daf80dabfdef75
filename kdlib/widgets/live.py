"""The live view: a run's curves kept up to date from the store by a background thread."""

from __future__ import annotations

import html
import threading

import ipywidgets as W
import pandas as pd

from kdlib import viz
from kdlib.runner import RunHandle
from kdlib.store import ACTIVE, RunStore
from kdlib.views import teacher_run_id

from .common import figure_widget, sync_figure
from .tuning import TuningPanel


class LiveView(W.VBox):
    """A run's loss and accuracy curves (viz.training_curves_figure), kept up to date from the store.

    A background thread polls the store every `interval` seconds and updates the figure's traces in
    place, so the kernel stays free; it stops when the run ends. While a student waits for its teacher
    to train, the teacher's curves are shown. `refresh()` updates once (what the tests call). While the run
    runs or is paused, `tuning` (a TuningPanel) has a slider for each param it may change while it trains.
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
        self.tuning = TuningPanel(self.handle, refresh=False)
        super().__init__([W.HBox([self.progress, self.status, *self.buttons.values()]), self.tuning, self.figure])
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
            changes = self.store.changes(shown)  # a dotted line where a change made while it trained took effect
            steps = self.store.step_metrics(shown)
            sync_figure(self.figure, viz.training_curves_figure(steps, epochs, title=title, changes=changes))
            self.tuning.refresh(status)
            total = max(self.store.run(shown)["total_epochs"] or 1, 1)
            self.progress.value = min(len(epochs) / total, 1.0)
            error = f"<br><span style='color:#b00020'>{html.escape(info['error'])}</span>" if info["error"] else ""
            phase = "epoch" if shown == self.run_id else "teacher epoch"
            self.status.value = (
                f"&nbsp;<b>{html.escape(info['name'])}</b> · {status} · {phase} {len(epochs)}/{total}"
                f" · <code>{self.run_id}</code>{error}"
            )
            for action, reason in self.handle.actions().items():
                self.buttons[action].disabled = reason is not None
                self.buttons[action].tooltip = f"not now: {reason}" if reason else action
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
