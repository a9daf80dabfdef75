"""Train: sliders that change a running run's params and lr from its next step (kdlib.tuning)."""

from __future__ import annotations

from kdlib.events import EpochEnded, ParamsChanged, RunEnded, RunStarted
from kdlib.store import RunStore, StoreSink
from tests.app.conftest import figures, open_page


def running_run(tiny) -> tuple[RunStore, str]:
    """A KD run as it is while it trains: started (by this process, alive), one epoch recorded."""
    store = RunStore()
    run_id = store.create_run(tiny())
    sink = StoreSink(store, run_id)
    sink.emit(RunStarted(total_epochs=3, start_epoch=0, steps_per_epoch=9, device="cpu", train_size=280))
    sink.emit(EpochEnded(0, 9, {"train.loss": 0.6, "test.acc": 0.8, "temperature": 2.0}, {}))
    sink.close()
    return store, run_id


def test_a_running_run_gets_a_slider_per_tunable_param_and_apply_asks_for_the_moved_ones(tiny):
    store, run_id = running_run(tiny)
    app = open_page("train", run=run_id)
    assert not [s for s in app.slider if s.key.startswith("tune-")]  # closed until asked for
    app.toggle(key=f"tune-{run_id}-open").set_value(True).run()
    sliders = {s.key.removeprefix(f"tune-{run_id}-"): s for s in app.slider if s.key.startswith("tune-")}
    assert set(sliders) == {"method.temperature", "method.w_ce", "method.w_kd"}
    assert sliders["method.temperature"].label == "temperature" and sliders["method.temperature"].value == 2.0
    assert app.number_input(key=f"tune-{run_id}-optimizer.lr").value == 0.01
    assert app.button(key=f"tune-{run_id}-apply").disabled  # nothing moved yet
    sliders["method.temperature"].set_value(1.5).run()
    app.button(key=f"tune-{run_id}-apply").click().run()
    assert not app.exception and not app.error
    assert store.changes(run_id)[["path", "value", "state"]].values.tolist() == [["method.temperature", 1.5, "pending"]]


def test_curves_mark_an_applied_change_and_an_ended_run_has_no_sliders(tiny):
    store, run_id = running_run(tiny)
    store.request_changes(run_id, {"method.temperature": 1.5})
    sink = StoreSink(store, run_id)
    sink.emit(ParamsChanged(1, 11, 2, {"method.temperature": 1.5}, (1,)))
    sink.emit(RunEnded("done"))
    sink.close()
    app = open_page("train", run=run_id)
    assert not app.slider and not [b for b in app.button if b.key == f"tune-{run_id}-apply"]
    curves = figures(app)[-1]
    assert [shape["x0"] for shape in curves["layout"]["shapes"]] == [11.0, 11 / 9 - 1]
