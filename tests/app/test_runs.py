"""Runs & compare: the table, overlaid curves, hyperparameters against results, rename, delete, export."""

from __future__ import annotations

from urllib.parse import parse_qs

import yaml

from kdlib.runner import execute
from kdlib.store import RunStore
from tests.app.conftest import figures, open_page


def finished(tiny, **changes) -> str:
    store = RunStore()
    run_id = store.create_run(tiny(**changes))
    assert execute(run_id, store) == "done"
    return run_id


def test_an_empty_store_says_so_and_links_to_train():
    app = open_page("runs")
    assert "No runs" in app.info[0].value
    assert [link.proto.page for link in app.get("page_link")] == ["train"]


def test_runs_are_listed_compared_and_plotted_against_their_hyperparameters(trained):
    store, run_id = trained
    app = open_page("runs")
    table = app.dataframe[0].value
    assert run_id in table.id.tolist() and set(table.kind) == {"student", "teacher"}
    assert app.multiselect(key="runs-compare").value == [run_id]  # students by default
    curves, parallel = figures(app)
    assert [t["name"] for t in curves["data"]] == [f"kd mlp on toy2d ({run_id[-6:]})"]
    assert curves["data"][0]["y"] == store.epoch_metrics(run_id)["test.acc"].tolist()
    labels = [d["label"] for d in parallel["data"][0]["dimensions"]]
    assert {"method", "student", "temperature", "w_kd", "test accuracy"} <= set(labels)
    assert app.query_params["runs"] in (run_id, [run_id])


def test_the_compared_runs_and_metric_come_from_the_link(trained):
    store, run_id = trained
    teacher = store.runs("teacher").id.iloc[0]
    app = open_page("runs", runs=f"{run_id},{teacher},gone", metric="train.loss", run=teacher)
    assert app.multiselect(key="runs-compare").value == [run_id, teacher]
    assert app.selectbox(key="runs-metric").value == "train.loss"
    assert app.selectbox(key="runs-one").value == teacher
    assert len(figures(app)[0]["data"]) == 2


def test_a_runs_config_is_exported_as_yaml(trained):
    store, run_id = trained
    app = open_page("runs", run=run_id)
    exported = yaml.safe_load(app.code[0].value)
    assert exported == store.config(run_id).to_dict()
    assert app.get("download_button")


def test_rename_and_delete_a_run(tiny):
    keep, gone = finished(tiny, method={"name": "ce"}), finished(tiny, method={"name": "ce"})
    app = open_page("runs", run=gone, runs=f"{keep},{gone}")
    app.text_input(key=f"rename-{gone}").input("my baseline").run()
    app.button(key="rename").click().run()
    assert RunStore().run(gone)["name"] == "my baseline"
    assert app.button(key="delete").disabled
    app.checkbox(key=f"sure-{gone}").check().run()
    app.button(key="delete").click().run()
    assert not app.exception
    assert RunStore().runs().id.tolist() == [keep]
    assert app.multiselect(key="runs-compare").value == [keep] and app.selectbox(key="runs-one").value == keep


def test_deleting_the_last_run_leaves_an_empty_page_without_errors(tiny):
    only = finished(tiny, method={"name": "ce"})
    app = open_page("runs", run=only)
    app.checkbox(key=f"sure-{only}").check().run()
    app.button(key="delete").click().run()
    assert not app.exception and "No runs" in app.info[0].value
    for page in ("boundaries", "temperature", None):
        open_page(page, run=only)  # a link to a deleted run still opens


def test_train_again_opens_the_form_filled_in_with_the_runs_settings(tiny):
    schedule = {"kind": "cosine", "start": 6.0, "end": 2.0}
    run_id = RunStore().create_run(tiny(method__temperature=schedule, student={"name": "mlp", "hidden": [16]}))
    app = open_page("runs", run=run_id)
    again = next(link.proto for link in app.get("page_link") if link.proto.label == "Train again with these settings")
    query = {k: v[0] for k, v in parse_qs(again.query_string).items()}
    train = open_page("train", **query)
    assert train.selectbox(key="train:toy2d:method.kd.temperature.kind").value == "cosine"
    assert train.number_input(key="train:toy2d:method.kd.temperature.cosine.s").value == 6.0
    assert train.text_input(key="train:toy2d:student.mlp.hidden").value == "[16]"
    assert train.number_input(key="train:toy2d:epochs").value == 3
    assert train.text_input(key="train:toy2d:teacher.model.mlp.hidden").value == "[32, 32]"
