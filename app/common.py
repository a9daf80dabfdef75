"""What several pages share: the page list, untrusted query parameters, Markdown escaping, run pickers and
the live run panel."""

from __future__ import annotations

import html
import ipaddress
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import streamlit as st
import yaml
from streamlit.logger import get_logger

from app.tuning import tuning_panel
from kdlib import RunStore, viz
from kdlib.data import DATASETS, load_data
from kdlib.runner import RunHandle, launch
from kdlib.store import ACTIVE
from kdlib.views import teacher_run_id

# Paths are relative to app/Home.py, the entry that registers them with st.navigation.
PAGES = {
    "home": ("pages_/home.py", "Home", ":material/home:"),
    "train": ("pages_/train.py", "Train", ":material/play_circle:"),
    "runs": ("pages_/runs.py", "Runs & compare", ":material/table_chart:"),
    "sweeps": ("pages_/sweeps.py", "Sweeps", ":material/tune:"),
    "boundaries": ("pages_/boundaries.py", "Decision boundaries", ":material/scatter_plot:"),
    "inspect": ("pages_/inspect.py", "Inspect samples", ":material/grain:"),
    "route": ("pages_/route.py", "Teacher route", ":material/route:"),
    "methods": ("pages_/methods.py", "Method views", ":material/widgets:"),
    "temperature": ("pages_/temperature.py", "Temperature and dark knowledge", ":material/thermostat:"),
    "lesson_route": ("pages_/lesson_route.py", "A route eases the teacher (RCO)", ":material/timeline:"),
    "lesson_pskd": ("pages_/lesson_pskd.py", "Progressive self-targets (PS-KD)", ":material/trending_up:"),
    "lesson_wsl": ("pages_/lesson_wsl.py", "Soft labels: bias and variance (WSL)", ":material/balance:"),
}


def page(key: str) -> str:
    return PAGES[key][0]


def link(key: str, label: str | None = None, **query: Any) -> None:
    """A link to a page, carrying `query` as its query parameters."""
    path, title, icon = PAGES[key]
    params = {k: encode(v) for k, v in query.items() if v is not None}
    st.page_link(path, label=label or title, icon=icon, query_params=params or None)


def encode(value: Any) -> str:
    """A query-parameter value: strings as they are, anything else as JSON (which YAML reads back)."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def decode(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character


def escape(text: Any) -> str:
    """`text` shown as it is in Markdown: a run name, a link's value or an error text makes no link, image,
    emphasis, maths or HTML (CommonMark lets a backslash escape any ASCII punctuation)."""
    return _PUNCTUATION.sub(r"\\\1", str(text))


def plain(text: Any) -> str:
    """`text` for a plotly title or legend, which reads <b>, <a href=...> and entities: shown as it is."""
    return html.escape(str(text), quote=False)


_LINK_WARNINGS = threading.local()  # where bad_link draws, per script run (each runs in a thread of its own)


def bad_link(name: str, raw: str, used: str | None) -> None:
    """The one warning for a query parameter that could not be used as it was; the address is corrected."""
    instead = "ignoring it" if used is None else f"using {escape(used)} instead"
    where = getattr(_LINK_WARNINGS, "container", None) or st
    where.warning(f"The address asks for {escape(name)} = {escape(raw)}, which this page cannot use; {instead}.")


@contextmanager
def link_warnings_in(container) -> Iterator[None]:
    """Draw the link warnings of the widgets made meanwhile in `container`, not beside them (Train's are in tabs
    that may be hidden)."""
    before, _LINK_WARNINGS.container = getattr(_LINK_WARNINGS, "container", None), container
    try:
        yield
    finally:
        _LINK_WARNINGS.container = before


def query_param(
    name: str,
    default: Any,
    *,
    options=None,
    low: float | None = None,
    high: float | None = None,
    format_func: Callable[[Any], str] = str,
) -> Any:
    """The query parameter `name`, typed like `default` (a string when it is None), among `options` or clipped to
    [low, high]. A link is untrusted: a value that is not of the type, not finite, out of range or not an option
    (an unknown or deleted run) becomes `default` (or the bound), with `bad_link`'s warning."""
    raw = st.query_params.get(name)
    if raw is None:
        return default
    cast = str if default is None else type(default)
    try:
        value = cast(raw)
    except (TypeError, ValueError):
        value = None
    if isinstance(value, float) and not math.isfinite(value):
        value = None
    used = default
    if value is not None and options is not None:
        used = value if value in options else default
    elif value is not None:
        used = cast(min(max(value, -math.inf if low is None else low), math.inf if high is None else high))
    if used != value:
        bad_link(name, raw, None if used is None else format_func(used))
        if used is None:
            del st.query_params[name]
        else:
            st.query_params[name] = encode(used)
    return used


def query_list(name: str, options, cast: Callable[[str], Any] = str) -> list | None:
    """A comma-separated query parameter's items that are among `options` (None when it is missing or none is);
    unknown or unreadable items are dropped with `bad_link`'s warning."""
    raw = st.query_params.get(name)
    if raw is None:
        return None
    items, kept = [t for t in raw.split(",") if t], []
    for text in items:
        try:
            value = cast(text)
        except (TypeError, ValueError):
            continue
        if value in options and value not in kept:
            kept.append(value)
    if len(kept) != len(items):
        bad_link(name, raw, ",".join(map(str, kept)) or None)
        st.query_params[name] = ",".join(map(str, kept))
    return kept or None


def refuse_other_machines() -> None:
    """Stop with a page that says how to open the app when the visitor is another machine: app/.streamlit/
    config.toml listens on 127.0.0.1, but a flag or STREAMLIT_SERVER_ADDRESS can override it. The app starts runs
    and deletes files with no login; KDLIB_APP_ALLOW_REMOTE=1 serves everyone when something else guards it."""
    ip = st.context.ip_address  # the TCP peer; None for 127.0.0.1 and ::1, not a string under AppTest
    if not isinstance(ip, str) or os.environ.get("KDLIB_APP_ALLOW_REMOTE") == "1":
        return
    try:
        address = ipaddress.ip_address(ip.split("%")[0])
        if (getattr(address, "ipv4_mapped", None) or address).is_loopback:
            return
    except ValueError:
        pass  # not an address: refused too
    get_logger("kdlib.app").warning("refused a visitor from %s: the app serves only the machine it runs on", ip)
    st.error(
        "KD Explorer serves only the machine it runs on: it starts runs and deletes files, with no login. Open it "
        "there, or from your machine through an SSH tunnel (`ssh -L 8501:127.0.0.1:8501 HOST`, then localhost:8501 "
        "in your browser). Start it without `--server.address` (it then listens on 127.0.0.1 only), or set "
        "`KDLIB_APP_ALLOW_REMOTE=1` if something else guards the network."
    )
    st.stop()


def query() -> dict[str, Any]:
    """The page's query parameters, decoded."""
    return {k: decode(v) for k, v in st.query_params.to_dict().items()}


def spec_query(prefix: str, spec) -> dict[str, Any]:
    """`{prefix: name, prefix.param: value}` for a data, model or method section, defaults left out."""
    full = spec.model_dump(mode="json", exclude={"name"})  # whole values: a schedule keeps its `kind`
    changed = spec.model_dump(mode="json", exclude_defaults=True, exclude={"name"})
    values = {k: full[k] for k in changed}
    constant = {k: v["value"] for k, v in values.items() if isinstance(v, dict) and v.get("kind") == "constant"}
    return {prefix: spec.name, **{f"{prefix}.{k}": v for k, v in (values | constant).items()}}


def train_query(config) -> dict[str, Any]:
    """Train's query parameters for a run's config: a link that opens the form filled in with it."""
    query = {
        **spec_query("data", config.data),
        **spec_query("student", config.student),
        **spec_query("method", config.method),
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "optimizer.name": config.optimizer.name,
        "optimizer.lr": config.optimizer.lr,
        "seed": config.seed,
    }
    if config.teacher is not None:
        query |= {
            **spec_query("teacher.model", config.teacher.model),
            "teacher.epochs": config.teacher.epochs,
            "teacher.optimizer.lr": config.teacher.optimizer.lr,
        }
    return query


FRESH_SECONDS = 5.0  # a run this young is followed four times a second until its first points show

# Worker processes this server started; polled on every page run, so that ended ones are reaped
# (a zombie would otherwise stay until the server exits).
_LAUNCHED: list[RunHandle] = []


def store() -> RunStore:
    _LAUNCHED[:] = [h for h in _LAUNCHED if h.process is not None and h.process.poll() is None]
    return RunStore()


def start_run(store: RunStore, config) -> str:
    """Launch a run in the background and remember its process; returns its id."""
    handle = launch(config, home=store.home)
    _LAUNCHED.append(handle)
    return handle.run_id


def run_label(runs, run_id: str) -> str:
    row = runs.set_index("id").loc[run_id]
    return f"{row['name']} · {row['status']} · {run_id}"


def pick_run(runs, label: str, key: str, param: str = "run", default: str | None = None, **kwargs) -> str | None:
    """A selectbox over `runs` (a store frame) that starts at the query parameter `param` (else at `default`, else
    the newest run) and writes it back; an unknown or deleted run in the link gets the link warning."""
    if runs.empty:
        return None
    ids = runs.id.tolist()
    if st.session_state.get(key) not in ids:
        st.session_state.pop(key, None)  # its run was deleted
    wanted = query_param(
        param, default if default in ids else ids[0], options=ids, format_func=lambda i: run_label(runs, i)
    )
    run_id = st.selectbox(
        label,
        ids,
        index=ids.index(wanted),
        format_func=lambda i: run_label(runs, i),
        key=key,
        **kwargs,
    )
    st.query_params[param] = run_id
    return run_id


def handle(store: RunStore, run_id: str) -> RunHandle:
    """The run's handle: the one that launched it, if this server did, so that its process is reaped."""
    return next((h for h in _LAUNCHED if h.run_id == run_id), None) or RunHandle(run_id, store)


def run_panel(store: RunStore, run_id: str, beside_curves: Callable[[str], None] | None = None,
              height: int | None = None) -> str:
    """Progress, curves and controls of one run; while a student waits for its teacher, the teacher's curves.

    `beside_curves(run_id)` draws right below the run's own curves (Train's decision boundaries); `height`
    sets the curves' height in pixels (a compact panel). Returns the run's status, or "gone" when it is no
    longer in the store.
    """
    if run_id not in store.runs(None).id.values:
        st.warning(f"Run {escape(run_id)} is no longer in the store.")
        return "gone"
    status = handle(store, run_id).status
    run = store.run(run_id)
    epochs, steps = store.epoch_metrics(run_id), store.step_metrics(run_id)
    total = max(run["total_epochs"] or 1, 1)
    st.progress(
        min(len(epochs) / total, 1.0), text=f"**{escape(run['name'])}** · {status} · epoch {len(epochs)}/{total}"
    )
    controls(store, run_id, status)
    tuning_panel(handle(store, run_id), status)  # sliders for the params it may change while it trains
    if run["error"]:
        st.error(escape(run["error"]))
    shown, title = run_id, plain(run["name"])
    if epochs.empty and steps.empty and status in ACTIVE:
        teacher = teacher_run_id(store, run_id)
        if teacher is not None and store.run(teacher)["status"] in ACTIVE:
            teacher_run = store.run(teacher)
            st.info(
                f"Training the teacher first ({teacher_run['status']}, epoch {teacher_run['epoch'] or 0}"
                f"/{teacher_run['total_epochs']}); it is trained once and reused by later runs."
            )
            shown, title = teacher, f"teacher: {plain(teacher_run['name'])}"
            epochs, steps = store.epoch_metrics(teacher), store.step_metrics(teacher)
    changes = store.changes(shown)  # a dotted line where a change made while it trained took effect
    curves = viz.training_curves_figure(steps, epochs, title=title, changes=changes)
    if height:  # compact: the legend below the axis titles; the run's name is in the progress bar already
        curves.update_layout(height=height, margin={"t": 60 if shown != run_id else 30, "b": 75}, legend={"y": -0.42})
        if shown == run_id:
            curves.update_layout(title=None)
    st.plotly_chart(curves, key=f"curves-{shown}")
    if beside_curves is not None and shown == run_id:
        beside_curves(run_id)
    scalars = viz.method_scalar_columns(epochs)
    moving = [c for c in scalars if epochs[c].nunique() > 1 or c.startswith("train.")]
    if steady := [f"{c} = {epochs[c].iloc[-1]:g}" for c in scalars if c not in moving]:
        st.caption("Constant over the epochs: " + ", ".join(steady))
    if moving:
        figure = viz.scalars_figure(epochs, moving, title="the method's own scalars", changes=changes)
        st.plotly_chart(figure, key=f"scalars-{shown}")
    return status


def controls(store: RunStore, run_id: str, status: str) -> None:
    """Pause, Resume, Stop; an action the run does not allow now is disabled, and its help says why."""
    run = handle(store, run_id)
    refused = run.actions()
    helps = {"pause": "pause at the next step", "stop": "stop now; Resume continues from the last checkpoint",
             "resume": "continue a paused run, or restart a stopped or failed one from its last checkpoint"}
    for column, action in zip(st.columns(3), ("pause", "resume", "stop"), strict=True):
        reason = refused[action]
        if column.button(action.capitalize(), key=f"{action}-{run_id}", disabled=reason is not None,
                         help=f"not now: {reason}" if reason else helps[action], width="stretch"):
            getattr(run, action)()
            if action == "resume":
                if run.process is not None and run not in _LAUNCHED:
                    _LAUNCHED.append(run)
                st.rerun()  # the panel starts refreshing again


def live_panel(store: RunStore, run_id: str, **panel) -> None:
    """`run_panel` (with `panel`'s options) in a fragment that refreshes every second while the run is active,
    without a full rerun."""
    active = run_id in store.runs(None).id.values and store.run(run_id)["status"] in ACTIVE
    # just started: looked at four times a second until its first points are in, so they show at once
    fresh = active and time.time() - store.run(run_id)["created"] < FRESH_SECONDS and store.step_metrics(run_id).empty

    @st.fragment(run_every=("0.25s" if fresh else "1s") if active else None)
    def live() -> None:
        status = run_panel(store, run_id, **panel)
        if active and status not in ACTIVE:
            st.rerun()  # the run ended: redraw the page once, and stop refreshing
        elif fresh and (time.time() - store.run(run_id)["created"] > FRESH_SECONDS or not store.step_metrics(run_id).empty):
            st.rerun()  # its first points are in (or it waits for its teacher): every second from now

    live()


def epoch_slider(epochs: list[int], key: str, label: str = "epoch") -> int:
    """A slider over a run's recorded epochs that starts at the `epoch` query parameter and writes it back."""
    start = query_param("epoch", epochs[-1], options=epochs)
    if len(epochs) == 1:
        epoch = epochs[0]
        st.caption(f"{label}: {epoch} (the only one recorded)")
    else:
        epoch = st.select_slider(label, options=epochs, value=start, key=key)
    st.query_params["epoch"] = str(epoch)
    return epoch


def clicked_sample(event) -> int | None:
    """The sample index (the point's customdata) of a plotly chart's selection event, if one point was clicked."""
    points = ((event or {}).get("selection") or {}).get("points") or []
    if not points:
        return None
    data = points[0].get("customdata")
    data = data[0] if isinstance(data, list | tuple) and data else data
    try:
        return int(data)
    except (TypeError, ValueError):
        return None


@st.cache_resource(show_spinner="loading the run's data ...", max_entries=4)
def dataset(name: str, params_json: str):
    """A run's data, loaded once per server (`config.data.name`, `config.data.model_dump_json()`)."""
    return load_data(DATASETS.get(name).Params.model_validate_json(params_json))


def train_button(label: str, query: dict[str, Any], key: str) -> None:
    """The button that ends a lesson: it opens Train filled in with `query`."""
    if st.button(label, type="primary", key=key):
        st.switch_page(page("train"), query_params={k: encode(v) for k, v in query.items()})
