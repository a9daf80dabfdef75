"""A lesson's slider and the figures it moves are one st.fragment: a slider step reruns that part, not the page."""

from __future__ import annotations

import functools
from unittest import mock

import pytest
from streamlit.runtime.scriptrunner import RerunData
from streamlit.testing.v1 import app_test, local_script_runner

from tests.app.conftest import figures, open_page


def fragment_step(app, widget) -> None:
    """Rerun the page's one fragment, as the browser asks when a widget inside it changes."""
    (fragment_id,) = list(app._fragment_storage._fragments)

    class SessionPages(app_test.PagesManager):  # a session's pages outlive a run; AppTest makes new ones
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._set_pages(dict(app._registered_pages))

    rerun = functools.partial(RerunData, fragment_id_queue=[fragment_id])
    with mock.patch.object(local_script_runner, "RerunData", rerun), mock.patch.object(app_test, "PagesManager",
                                                                                       SessionPages):
        widget.run()
    assert not app.exception, [e.value for e in app.exception]


@pytest.mark.parametrize(
    ("page", "key", "value", "metric"),
    [("temperature", "temperature-T", 8.0, "0.325"), ("lesson_pskd", "pskd-alpha", 0.2, "0.600"),
     ("lesson_wsl", "wsl-ps", 0.3, "0.905")],
)
def test_a_slider_step_reruns_its_fragment_alone(page, key, value, metric):
    app = open_page(page)
    assert len(app._fragment_storage._fragments) == 1 and app.markdown
    before = figures(app)[0]
    fragment_step(app, app.slider(key=key).set_value(value))
    assert not app.markdown and not app.title  # the page's text did not run again
    assert app.slider(key=key).value == value and app.metric[0].value == metric
    assert figures(app)[0] != before
    assert app.query_params[key.split("-")[-1] if page != "temperature" else "T"] in (f"{value:g}", [f"{value:g}"])


def test_the_route_lesson_s_epoch_slider_is_its_fragment(methods):
    store, runs = methods
    app = open_page("lesson_route")
    epochs = store.epoch_metrics(runs["rco"]).index.tolist()
    fragment_step(app, app.select_slider(key=f"route-lesson-epoch-{runs['rco']}").set_value(epochs[-1]))
    assert not app.title and figures(app)[0]["data"][-2]["name"] == f"student epoch {epochs[-1]}"
