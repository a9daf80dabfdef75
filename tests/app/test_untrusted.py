"""The app is safe to leave open: run names, errors and links are shown as text, a bad query parameter is
corrected with one warning on every page, another machine is refused, and nothing comes from the internet."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.runtime.context import ContextProxy

from app.common import escape
from kdlib.runner import execute
from kdlib.store import RunStore
from kdlib.sweep import run_sweep, sweep_section
from kdlib.validation import validate_config
from tests.app.conftest import figures, open_page, shown
from tests.conftest import tiny_config

HOSTILE = "[click](http://evil) ![x](http://evil/x.png) **bold** <b>html</b>"
MARKUP = ("](", "![", "**bold**", "<b>", "http://")  # what the name would bring if it were read as Markdown
TEXT = ("markdown", "caption", "title", "header", "subheader", "warning", "error", "info", "success", "toast")
WIDGETS = ("button", "checkbox", "multiselect", "number_input", "radio", "select_slider", "selectbox", "slider")


@pytest.fixture(scope="module")
def hostile_home(tmp_path_factory):
    """A store whose runs, teacher, failed run's error and study are all named HOSTILE, and a deleted run."""
    store = RunStore(tmp_path_factory.mktemp("hostile-home"))
    config = validate_config(tiny_config(output={"route": {"every": 1}}))
    run_id = store.create_run(config)
    assert execute(run_id, store) == "done"
    teacher = store.runs("teacher").id.iloc[0]
    failed = store.create_run(validate_config(tiny_config(seed=1)))
    store.end_run(failed, "failed", error=f"it broke: {HOSTILE}")
    gone = store.create_run(validate_config(tiny_config(seed=2)))
    store.delete_run(gone)
    section = sweep_section(config, search={"temperature": "1:8"}, trials=1, study=HOSTILE, pruner="none")
    run_sweep(config, section, home=str(store.home))
    for i in (run_id, teacher, failed):
        store.rename_run(i, HOSTILE)
    return store.home, {"run": run_id, "teacher": teacher, "failed": failed, "gone": gone}


@pytest.fixture
def hostile(hostile_home, monkeypatch):
    home, runs = hostile_home
    monkeypatch.setenv("KDLIB_HOME", str(home))
    return runs


def markdown_of(app) -> list[str]:
    """Every string of the page that Streamlit renders as Markdown."""
    texts = [e.value for kind in TEXT for e in app.get(kind)]
    texts += [e.proto.text for e in app.get("progress")] + [e.proto.label for e in app.get("page_link")]
    texts += [w.label for kind in WIDGETS for w in app.get(kind)] + [o for r in app.get("radio") for o in r.options]
    return texts


def test_escape_leaves_no_markdown_and_shows_the_text_as_it_is():
    text = escape(HOSTILE + " `code` $x$ :red[red] # - 1. | ~~x~~ _i_ \\")
    assert not re.search(r"(?<!\\)[\[\]()!*<>`$:#|~_-]", text.replace("\\\\", ""))
    assert shown(text) == HOSTILE + " `code` $x$ :red[red] # - 1. | ~~x~~ _i_ \\"


@pytest.mark.parametrize(
    "page, query",
    [
        ("home", {}),
        ("train", {"run": "run"}),
        ("train", {"run": "failed"}),
        ("runs", {"run": "failed"}),
        ("inspect", {"run": "run"}),
        ("route", {"run": "run"}),
        ("boundaries", {"run": "run"}),
        ("methods", {"run": "run"}),
        ("lesson_route", {"run": "run"}),
        ("sweeps", {}),
        ("temperature", {"source": "teacher"}),
    ],
)
def test_a_hostile_run_name_and_error_are_shown_as_text(hostile, page, query):
    app = open_page(page, **{k: hostile[v] for k, v in query.items()})
    texts = markdown_of(app)
    assert not [t for t in texts if any(m in t for m in MARKUP)]


def test_the_hostile_name_is_shown_where_a_run_is_watched(hostile):
    app = open_page("train", run=hostile["run"])  # the name is in the progress bar; the compact curves have no title
    assert HOSTILE in shown(app.get("progress")[0].proto.text)
    titles = [f["layout"].get("title", {}).get("text", "") for f in figures(app)]  # plotly reads <b> and <a href> ...
    assert not [t for t in titles if "<" in t]
    app = open_page("runs", runs=hostile["run"], run=hostile["run"])
    names = [t.get("name") or "" for f in figures(app) for t in f["data"]]
    assert [n for n in names if "**bold** &lt;b&gt;html&lt;/b&gt;" in n] and not [n for n in names if "<" in n]
    app = open_page("runs", run=hostile["failed"])
    assert f"it broke: {HOSTILE}" in [shown(e.value) for e in app.error]


@pytest.mark.parametrize("page", ["home", "train", "runs", "inspect", "route", "boundaries", "methods", "lesson_route"])
def test_a_hostile_run_link_is_named_as_text_in_the_one_warning(hostile, page):
    app = open_page(page, run=HOSTILE)
    warnings = [w.value for w in app.warning]
    assert [shown(w) for w in warnings if "which this page cannot use" in w][0].startswith(
        f"The address asks for run = {HOSTILE}, which this page cannot use"
    )
    assert not [t for t in markdown_of(app) if any(m in t for m in MARKUP)]


# page, query parameters, the parameter that gets the warning, and a check of what the page used instead
CASES = [
    ("temperature", {"T": "nan"}, "T", lambda app, runs: app.slider(key="temperature-T").value == 4.0),
    ("temperature", {"T": "inf"}, "T", lambda app, runs: app.slider(key="temperature-T").value == 4.0),
    ("temperature", {"T": "99"}, "T", lambda app, runs: app.slider(key="temperature-T").value == 20.0),
    ("temperature", {"compare": "nan,16,x"}, "compare", lambda app, runs: app.multiselect[0].value == [16.0]),
    ("temperature", {"source": "nope"}, "source", lambda app, runs: app.selectbox[0].value == "example"),
    (
        "temperature",
        {"source": "<teacher>", "sample": "-3"},
        "sample",
        lambda app, runs: app.number_input[0].value == 0,
    ),
    ("lesson_pskd", {"alpha": "2"}, "alpha", lambda app, runs: app.slider(key="pskd-alpha").value == 1.0),
    ("lesson_pskd", {"p": "-1"}, "p", lambda app, runs: app.slider(key="pskd-p").value == 0.0),
    ("lesson_pskd", {"prev": "nan"}, "prev", lambda app, runs: app.slider(key="pskd-prev").value == 0.9),
    ("lesson_wsl", {"ps": "nan"}, "ps", lambda app, runs: app.slider(key="wsl-ps").value == 0.8),
    ("lesson_wsl", {"pt": "5"}, "pt", lambda app, runs: app.slider(key="wsl-pt").value == 0.99),
    ("lesson_route", {"run": "<gone>"}, "run", lambda app, runs: app.selectbox[0].value is not None),
    ("home", {"run": "<gone>"}, "run", lambda app, runs: app.selectbox(key="home-run").value is not None),
    ("inspect", {"run": "<gone>"}, "run", lambda app, runs: app.selectbox(key="inspect-run").value is not None),
    ("inspect", {"epoch": "99"}, "epoch", lambda app, runs: app.select_slider[0].value == 2),
    ("inspect", {"epoch": "nan"}, "epoch", lambda app, runs: app.select_slider[0].value == 2),
    ("inspect", {"view": "bogus"}, "view", lambda app, runs: app.radio[0].index == 0),
    ("inspect", {"sample": "-1"}, "sample", lambda app, runs: app.number_input[0].value == 0),
    ("inspect", {"sample": "1e9"}, "sample", lambda app, runs: app.number_input[0].value == 0),
    ("route", {"run": "<gone>"}, "run", lambda app, runs: app.selectbox(key="route-run").value is not None),
    ("route", {"run": "<run>", "epoch": "abc"}, "epoch", lambda app, runs: app.select_slider[0].value == 2),
    ("methods", {"run": "nope"}, "run", lambda app, runs: app.selectbox(key="methods-run").value is not None),
    ("boundaries", {"run": "<gone>"}, "run", lambda app, runs: app.selectbox(key="boundaries-run").value is not None),
    ("boundaries", {"run": "<run>", "epoch": "-1"}, "epoch", lambda app, runs: app.select_slider[0].value == 3),
    ("boundaries", {"run": "<run>", "color": "x"}, "color", lambda app, runs: app.radio[0].value == "soft"),
    ("runs", {"runs": "<run>,nope"}, "runs", lambda app, runs: app.multiselect[0].value == [runs["run"]]),
    ("runs", {"metric": "nope"}, "metric", lambda app, runs: app.selectbox(key="runs-metric").value == "test.acc"),
    ("runs", {"run": "<gone>"}, "run", lambda app, runs: app.selectbox(key="runs-one").value is not None),
    ("sweeps", {"study": "nope"}, "study", lambda app, runs: app.selectbox[0].value == HOSTILE),
    ("train", {"run": "<gone>"}, "run", lambda app, runs: not app.get("progress")),
    ("train", {"data": "bogus"}, "data", lambda app, runs: app.selectbox(key="train:data").value == "toy2d"),
    ("train", {"method": "bogus"}, "method", lambda app, runs: app.selectbox(key="train:toy2d:method").value == "kd"),
    ("train", {"epochs": "abc"}, "epochs", lambda app, runs: app.number_input(key="train:toy2d:epochs").value == 30),
    (
        "train",
        {"epochs": "99999999999999999999999"},
        "epochs",
        lambda app, runs: app.number_input(key="train:toy2d:epochs").value == 30,
    ),
    (
        "train",
        {"method.temperature": ".nan"},
        "method.temperature",
        lambda app, runs: app.number_input(key="train:toy2d:method.kd.temperature.constant.value").value == 4.0,
    ),
    (
        "train",
        {"method.temperature": "{kind: linear, start: .inf, end: 1}"},
        "method.temperature",
        lambda app, runs: app.selectbox(key="train:toy2d:method.kd.temperature.kind").value == "constant",
    ),
    (
        "train",
        {"data.noise": ".inf"},
        "data.noise",
        lambda app, runs: app.number_input(key="train:toy2d:data.noise").value == 0.25,
    ),
    ("train", {"seed": "[1, 2]"}, "seed", lambda app, runs: app.number_input(key="train:toy2d:seed").value == 0),
]


def with_ids(text: str, runs: dict[str, str]) -> str:
    """`<run>`, `<teacher>`, `<gone>` ... replaced by the run ids of the hostile store."""
    return re.sub(r"<(\w+)>", lambda m: runs[m.group(1)], text)


@pytest.mark.parametrize("page, query, name, used", CASES, ids=[f"{c[0]}?{c[2]}" for c in CASES])
def test_a_bad_query_parameter_is_corrected_with_the_one_warning(hostile, page, query, name, used):
    query = {k: with_ids(v, hostile) for k, v in query.items()}
    app = open_page(page, **query)
    raw = query[name]
    warnings = [shown(w.value) for w in app.warning if "which this page cannot use" in w.value]
    assert len(warnings) == 1 and warnings[0].startswith(f"The address asks for {name} = {raw}, which this page")
    assert used(app, hostile)
    assert app.query_params.get(name) != [raw]  # the address is corrected ...
    app.run()
    assert not app.exception and not [w for w in app.warning if "which this page cannot use" in w.value]  # ... once


def test_a_link_with_bad_data_keeps_its_other_values_and_warns_for_each(hostile):
    app = open_page("train", data="bogus", epochs="abc", batch_size="16")
    assert [shown(w.value).split(",")[0] for w in app.warning] == [
        "The address asks for data = bogus",
        "The address asks for epochs = abc",
    ]
    assert app.number_input(key="train:toy2d:batch_size").value == 16


def test_an_unknown_or_deleted_run_gets_the_same_warning_on_every_page(hostile):
    pages = ["home", "train", "runs", "inspect", "route", "boundaries", "methods", "lesson_route"]
    for run in ("gone", "20200101-000000-abcdef"):
        run_id = hostile.get(run, run)
        texts = {page: [shown(w.value) for w in open_page(page, run=run_id).warning] for page in pages}
        assert all(f"The address asks for run = {run_id}, which this page cannot use" in t[0] for t in texts.values())


def test_another_machine_is_refused_with_how_to_open_the_app(monkeypatch, caplog):
    monkeypatch.setattr(ContextProxy, "ip_address", property(lambda self: "192.0.2.7"))
    app = open_page()
    assert "serves only the machine it runs on" in app.error[0].value and "ssh -L" in app.error[0].value
    assert not app.get("page_link") and not app.title  # no page was run
    monkeypatch.setenv("KDLIB_APP_ALLOW_REMOTE", "1")
    assert open_page().title[0].value == "KD Explorer"


@pytest.mark.parametrize("ip", ["::ffff:127.0.0.1", "127.0.0.2"])
def test_this_machine_by_any_loopback_address_is_served(monkeypatch, ip):
    monkeypatch.setattr(ContextProxy, "ip_address", property(lambda self: ip))
    assert open_page().title[0].value == "KD Explorer"


def test_the_app_names_nothing_on_the_internet():
    """The page icon is an emoji (drawn by the browser); a :material/...: favicon comes from fonts.gstatic.com."""
    app_dir = Path(__file__).resolve().parents[2] / "app"
    sources = {p: p.read_text() for p in [*app_dir.rglob("*.py"), *app_dir.rglob("*.toml")]}
    assert not [p for p, text in sources.items() if re.search(r"https?://|page_icon=\"?:", text)]
