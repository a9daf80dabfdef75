"""The notebook's sliders that change a running run from its next step (kdlib.widgets.tuning, in LiveView)."""

from __future__ import annotations

from kdlib.events import EpochEnded, ParamsChanged, RunEnded, RunStarted, StepLogged
from kdlib.store import RunStore, StoreSink
from kdlib.widgets import LiveView, TuningPanel


def test_sliders_start_at_the_runs_values_apply_asks_for_the_moved_ones_and_follow_the_run(kdlib_home, tiny):
    store = RunStore(kdlib_home)
    run_id = store.create_run(tiny())
    sink = StoreSink(store, run_id)
    sink.emit(RunStarted(total_epochs=3, start_epoch=0, steps_per_epoch=9, device="cpu", train_size=280))
    sink.emit(EpochEnded(0, 9, {"train.loss": 0.6, "test.acc": 0.8, "temperature": 2.0}, {}))
    sink.flush()
    live = LiveView(run_id, follow=False)
    panel = live.tuning
    assert isinstance(panel, TuningPanel) and panel in live.children
    assert set(panel.sliders) == {"method.temperature", "method.w_ce", "method.w_kd", "optimizer.lr"}
    assert panel.sliders["method.temperature"].value == 2.0 and panel.sliders["optimizer.lr"].value == 0.01
    assert panel.submit() == {} and "move a slider first" in panel.message.value
    panel.sliders["method.temperature"].value = 1.5
    panel.sliders["optimizer.lr"].value = 0.005
    panel.apply.click()
    assert "asked method.temperature = 1.5, optimizer.lr = 0.005" in panel.message.value
    assert store.changes(run_id).state.tolist() == ["pending", "pending"]

    sink.emit(ParamsChanged(1, 11, 2, {"method.temperature": 1.5, "optimizer.lr": 0.005}, (1, 2)))
    sink.emit(StepLogged(1, 12, {"train.loss": 0.5}))  # the run is past the change now
    sink.flush()
    live.refresh()
    assert panel.started["method.temperature"] == 1.5 and panel.started["optimizer.lr"] == 0.005
    assert panel.submit() == {}  # nothing moved since: the run has the values
    assert [shape.x0 for shape in live.figure.layout.shapes] == [11.0, 11 / 9 - 1]
    sink.emit(RunEnded("done"))
    sink.close()
    live.refresh()
    assert panel.children == ()
