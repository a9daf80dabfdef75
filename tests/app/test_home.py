"""Home: what KD Explorer is, the runs at a glance, and links to every page and lesson."""

from __future__ import annotations

import time

import pytest
from streamlit.testing.v1 import AppTest

from kdlib.runner import RunHandle, execute
from kdlib.store import RunStore
from tests.app.conftest import HOME, open_page

PAGES = {
    "train",
    "runs",
    "sweeps",
    "inspect",
    "route",
    "boundaries",
    "methods",
    "temperature",
    "lesson_route",
    "lesson_pskd",
    "lesson_wsl",
}


def test_an_empty_store_shows_how_to_start_and_links_every_page():
    app = open_page()
    assert "No runs yet" in app.info[0].value
    assert app.button[0].label == "Start the default run"
    assert {link.proto.page for link in app.get("page_link")} == PAGES


def test_a_finished_run_is_listed_with_links_to_its_views(tiny):
    store = RunStore()
    run_id = store.create_run(tiny(method={"name": "ce"}))
    execute(run_id, store)
    app = open_page()
    assert run_id in app.dataframe[0].value.id.tolist()
    assert app.selectbox[0].value == run_id and app.query_params["run"] in (run_id, [run_id])
    links = [link.proto for link in app.get("page_link") if link.proto.query_string]
    assert {link.page for link in links} == {"train", "runs", "inspect", "route", "boundaries"}
    assert all(f"run={run_id}" in link.query_string for link in links)


@pytest.mark.slow
def test_the_button_starts_the_default_run_and_opens_train_to_watch_it():
    app = open_page()
    app.button[0].click().run()
    assert not app.exception
    runs = RunStore().runs("student")  # its teacher's run may be there already: the warm worker starts at once
    assert len(runs) == 1 and runs.name.iloc[0] == "kd mlp on toy2d"
    assert app.query_params["run"] in (runs.id.iloc[0], [runs.id.iloc[0]])
    assert app.button(key="train-start")  # now on Train
    store, run = RunStore(), RunHandle(runs.id.iloc[0], RunStore())
    deadline = time.monotonic() + 120
    while not ((store.runs("teacher").status == "running").any() or len(store.step_metrics(run.run_id))):
        assert time.monotonic() < deadline and run.status in ("queued", "running")
        time.sleep(0.2)
    app.run()
    app.button(key=f"stop-{run.run_id}").click().run()  # while it waits for its teacher, stops the teacher too
    # "failed" while kdlib.teachers copies the weights of a stopped teacher run that has none (reported)
    assert run.wait(timeout=120) in ("stopped", "failed")
    assert set(store.runs("teacher").status) <= {"stopped", "done"}


def test_a_damaged_store_is_explained_on_the_page(kdlib_home):
    kdlib_home.mkdir(parents=True, exist_ok=True)
    (kdlib_home / "store.sqlite").write_bytes(b"this is not a database" * 100)
    app = AppTest.from_file(HOME, default_timeout=60).run()
    assert not app.exception
    shown = [e.value.replace("\\", "") for e in app.error]  # escaped Markdown, as a person reads it
    assert any("store.sqlite is damaged" in text for text in shown), shown
