"""The first page, rendered by Streamlit's AppTest (no browser)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from kdlib.runner import execute
from kdlib.store import RunStore

HOME = str(Path(__file__).resolve().parents[2] / "app" / "Home.py")


def test_an_empty_store_shows_how_to_start():
    app = AppTest.from_file(HOME, default_timeout=30).run()
    assert not app.exception
    assert "No runs yet" in app.info[0].value
    assert app.button[0].label == "Start the default run"


def test_a_finished_run_is_listed_and_its_curves_drawn(tiny):
    store = RunStore()
    run_id = store.create_run(tiny(method={"name": "ce"}))
    execute(run_id, store)
    app = AppTest.from_file(HOME, default_timeout=30).run()
    assert not app.exception
    assert run_id in app.dataframe[0].value.id.tolist()
    assert app.selectbox[0].value == run_id
    assert app.query_params["run"] == [run_id] or app.query_params["run"] == run_id


@pytest.mark.slow
def test_the_button_starts_the_default_run_in_the_background():
    app = AppTest.from_file(HOME, default_timeout=30).run()
    app.button[0].click().run()
    assert not app.exception
    runs = RunStore().runs()
    assert len(runs) == 1 and runs.name.iloc[0] == "kd mlp on toy2d"
    from kdlib.runner import RunHandle

    assert RunHandle(runs.id.iloc[0], RunStore()).wait(timeout=120) == "done"
