"""Helpers for AppTest: open a page of the app (through the entry, so st.navigation knows every page)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from kdlib.runner import execute
from kdlib.store import RunStore
from kdlib.validation import validate_config
from tests.conftest import tiny_config

HOME = str(Path(__file__).resolve().parents[2] / "app" / "Home.py")


def open_page(page: str | None = None, **query: str) -> AppTest:
    """Run the app, then switch to `app/pages_/<page>.py` with `query` as its query parameters."""
    app = AppTest.from_file(HOME, default_timeout=60).run()
    if page is not None:
        app.query_params.clear()
        app.query_params.update(query)
        app.switch_page(f"pages_/{page}.py").run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def shown(markdown: str) -> str:
    """The text a reader sees of Markdown that `app.common.escape` wrote (its backslashes gone)."""
    return re.sub(r"\\(.)", r"\1", markdown)


def figures(app: AppTest) -> list[dict]:
    """The plotly figures on the page, as the JSON the browser receives (numeric arrays as lists)."""
    return [_plain(json.loads(chart.proto.spec)) for chart in app.get("plotly_chart")]


def _plain(value):
    """Plotly sends numpy arrays as `{dtype, bdata[, shape]}` (base64); back to nested lists."""
    if isinstance(value, dict) and "bdata" in value and "dtype" in value:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = value.get("shape")
        shape = [int(n) for n in shape.split(",")] if isinstance(shape, str) else shape
        return (array.reshape(shape) if shape else array).tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory):
    """A store with a finished tiny KD run on toy2d that kept its weights per epoch, and its teacher run."""
    store = RunStore(tmp_path_factory.mktemp("trained-home"))
    run_id = store.create_run(validate_config(tiny_config(output={"route": {"every": 1}})))
    assert execute(run_id, store) == "done"
    return store.home, run_id


@pytest.fixture
def trained(trained_home, monkeypatch):
    """Point the app at the trained store (read only: tests that change a store make their own)."""
    home, run_id = trained_home
    monkeypatch.setenv("KDLIB_HOME", str(home))
    return RunStore(home), run_id


@pytest.fixture(scope="session")
def methods_home(tmp_path_factory):
    """A store with finished tiny PS-KD, WSL and RCO runs on toy2d that kept their weights per epoch."""
    store = RunStore(tmp_path_factory.mktemp("methods-home"))
    runs = {}
    for method in ("pskd", "wsl", "rco"):
        config = tiny_config(method={"name": method}, output={"route": {"every": 1}})
        runs[method] = store.create_run(validate_config(config))
        assert execute(runs[method], store) == "done"
    return store.home, runs


@pytest.fixture
def methods(methods_home, monkeypatch):
    """Point the app at the store of PS-KD, WSL and RCO runs (read only); returns it and the run ids by method."""
    home, runs = methods_home
    monkeypatch.setenv("KDLIB_HOME", str(home))
    return RunStore(home), runs
