"""Sweeps: a study's trials with their params, params against the value, and the curves (pruned dashed)."""

from __future__ import annotations

import optuna

from kdlib.store import RunStore
from kdlib.sweep import run_sweep, sweep_section
from tests.app.conftest import figures, open_page


def test_an_empty_store_says_how_to_start_a_sweep():
    app = open_page("sweeps")
    assert "No sweeps" in app.info[0].value and "python -m kdlib sweep" in app.info[0].value


def test_a_studys_trials_are_shown_with_their_params_values_and_curves(tiny):
    config, store = tiny(), RunStore()
    search = {"temperature": "log:1:8", "w_kd": "0.1:0.9"}
    run_sweep(config, sweep_section(config, search=search, trials=2, study="other", pruner="none"))
    run_sweep(config, sweep_section(config, search=search, trials=2, study="mine", pruner="none", seed=1))
    pruning = optuna.pruners.ThresholdPruner(lower=1.01)  # prunes every trial after its first epoch
    run_sweep(config, sweep_section(config, search=search, trials=1, study="mine"), pruner=pruning)
    trials = store.study_trials("mine")

    app = open_page("sweeps", study="mine")
    assert app.selectbox(key="sweeps-study").value == "mine"
    assert app.selectbox(key="sweeps-study").options == ["mine", "other"]
    table = app.dataframe[0].value
    assert table.run_id.tolist() == trials.run_id.tolist() and table.state.tolist() == [
        "complete",
        "complete",
        "pruned",
    ]
    assert table["method.temperature"].tolist() == trials["method.temperature"].tolist()
    assert "3 trials" in app.markdown[0].value and "best: trial" in app.markdown[0].value

    params, parallel, curves = figures(app)
    assert {t["name"] for t in params["data"]} == {"complete", "pruned"}
    assert len({t["xaxis"] for t in params["data"]}) == 2  # one panel per param
    assert [d["label"] for d in parallel["data"][0]["dimensions"]] == ["method.temperature", "method.w_kd", "val accuracy"]
    assert [t["name"] for t in curves["data"]] == ["trial 0", "trial 1", "trial 2"]
    assert [t.get("line", {}).get("dash") for t in curves["data"]] == [None, None, "dash"]
    assert curves["data"][2]["y"] == store.epoch_metrics(trials.run_id.iloc[2])["val.acc"].tolist()
    link = next(link.proto for link in app.get("page_link") if link.proto.page == "runs")
    assert all(run_id in link.query_string for run_id in trials.run_id)

    app.selectbox(key="sweeps-metric").set_value("test.nll").run()
    assert figures(app)[2]["layout"]["yaxis"]["title"]["text"] == "test NLL"
    app.selectbox(key="sweeps-study").set_value("other").run()
    assert app.query_params["study"] in ("other", ["other"]) and len(app.dataframe[0].value) == 2
