"""Train: pick data, models and a method, tune its coefficients, start a run and watch it live.

The form's state is the page's query parameters, named by config path (`method.temperature=8`,
`student.hidden=[4]`, `data=toy2d`), so a lesson or a colleague can hand out a link to a setting.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from app.common import dataset, decode, encode, escape, link_warnings_in, live_panel, query, query_param, start_run
from app.common import store as open_store
from app.forms import FieldErrors, field_widget, link_start, params_widgets
from kdlib import RunStore, viz
from kdlib.config import ConfigError, OptimizerSection, RunConfig, TrainingSection
from kdlib.controls import route_choices
from kdlib.data import DATASETS
from kdlib.methods import METHODS
from kdlib.models import MODELS
from kdlib.registry import summary
from kdlib.validation import validate_config
from kdlib.views import grid_probabilities, load_student, load_teacher, plane_grid, route_epochs

# Starting points per dataset: models that suit its shape, and a recipe that trains in seconds to a minute on a CPU.
BASE = {
    "data": "toy2d",
    "method": "kd",
    "student": "resnet8",
    "teacher.model": "resnet32x4",
    "epochs": 30,
    "batch_size": 128,
    "optimizer.name": "adam",
    "optimizer.lr": 0.001,
    "seed": 0,
    "teacher.epochs": 30,
    "teacher.optimizer.lr": 0.001,
}
PRESETS = {
    "toy2d": {
        "data.noise": 0.25,
        "data.label_noise": 0.1,
        "student": "mlp",
        "student.hidden": [4],
        "teacher.model": "mlp",
        "teacher.model.hidden": [64, 64],
        "epochs": 30,
        "batch_size": 64,
        "optimizer.lr": 0.01,
        "teacher.epochs": 20,
        "teacher.optimizer.lr": 0.01,
    },
    "mnist1d": {
        "student": "mlp",
        "student.hidden": [128],
        "teacher.model": "cnn1d",
        "epochs": 15,
        "optimizer.lr": 0.003,
        "teacher.epochs": 15,
        "teacher.optimizer.lr": 0.003,
    },
    "digits": {
        "student": "mlp",
        "student.hidden": [32],
        "teacher.model": "cnn2d",
        "teacher.model.channels": [16, 32],
        "epochs": 30,
        "batch_size": 64,
        "optimizer.lr": 0.003,
        "teacher.epochs": 30,
        "teacher.optimizer.lr": 0.003,
    },
}
EMBEDDED = ["toy2d", "mnist1d", "digits"]  # no download needed
LOG_EVERY = {"toy2d": 5, "digits": 5}
CURVES_HEIGHT, BOUNDARY_HEIGHT = 260, 235  # px: curves and both boundaries fit a 900 px screen under the controls
ADVANCED_DATA = {"val_fraction", "test_fraction", "split_seed", "generator_seed", "num_workers", "in_memory"}


def form_start() -> dict[str, Any]:
    """Where the form starts: the link's values, or this session's last form when opened from the menu."""
    current = {k: v for k, v in query().items() if k != "run"}
    written = st.session_state.get("train.written")
    if not current and written:
        current = written
        st.session_state["train.initial"] = written
    if current != st.session_state.get("train.initial") and current != written:
        for key in [k for k in st.session_state if str(k).startswith("train:")]:
            del st.session_state[key]  # opened from a new link: widgets start at its values
        st.session_state["train.initial"] = current
    return st.session_state.setdefault("train.initial", current)


def preset(data: str) -> dict[str, Any]:
    return {**BASE, **PRESETS.get(data, {})}


def starting_values(data: str, initial: dict[str, Any]) -> dict[str, Any]:
    """The data's preset, overridden by the link (only its method settings when it named other data)."""
    if initial.get("data", BASE["data"]) == data:
        return preset(data) | initial
    return preset(data) | {k: v for k, v in initial.items() if k.split(".")[0] == "method"}


def choice(label: str, options: list[str], path: str, start: dict, key: str, errors: FieldErrors, **kw) -> str:
    wanted, default = start.get(path, options[0]), base.get(path, options[0])
    wanted = link_start(path, wanted, wanted in options, default, f"{key}:{path}")
    value = st.selectbox(label, options, index=options.index(wanted), key=f"{key}:{path}", **kw)
    errors.slot(path)
    return value


def number(label: str, section: type, field: str, path: str, start: dict, key: str, errors: FieldErrors) -> Any:
    info = section.model_fields[field]
    default = base.get(path, info.get_default(call_default_factory=True))
    value = field_widget(label, info, start.get(path, default), f"{key}:{path}", path, default)
    errors.slot(path)
    return value


def model_form(role: str, path: str, start: dict, key: str, errors: FieldErrors, epochs: int) -> dict:
    name = choice(f"{role} model", MODELS.names(), path, start, key, errors, help=f"the {role}'s architecture")
    values, _ = params_widgets(
        MODELS.get(name).Params, path, start, f"{key}:{path}.{name}", errors, epochs, fallback=base
    )
    return {"name": name, **values}


def flat(prefix: str, section: dict) -> dict[str, Any]:
    """`{name: mlp, hidden: [4]}` at `student` -> `{student: mlp, student.hidden: [4]}`."""
    return {prefix: section["name"], **{f"{prefix}.{k}": v for k, v in section.items() if k != "name"}}


def changed(form: dict[str, Any], data: str, specs: dict[str, type]) -> dict[str, Any]:
    """The form's values that differ from where a fresh form starts (data and method are always kept)."""
    reference = preset(data)
    kept = {}
    for path, value in form.items():
        section, _, field = path.rpartition(".")
        info = specs[section].model_fields.get(field) if section in specs else None
        default = reference.get(path, info.get_default(call_default_factory=True) if info else None)
        if path in ("data", "method") or value != default:
            kept[path] = value
    return kept


@st.cache_data(max_entries=16, show_spinner=False)
def boundary_figure(home: str, run_id: str, epoch: int | None = None):
    """The student's decision regions after `epoch` epochs, or the converged teacher's (None): points by label."""
    store = RunStore(home)
    config = store.config(run_id)
    data = dataset(config.data.name, config.data.model_dump_json())
    model = load_student(store, run_id, epoch, data) if epoch is not None else load_teacher(store, run_id, data)
    if model is None:
        return None
    points, labels = data.train.x.numpy(), data.train.y.numpy()
    xs, ys = plane_grid(points, resolution=80)
    title = f"student after epoch {epoch}" if epoch is not None else f"teacher ({config.teacher.model.name})"
    figure = viz.decision_boundary_figure(
        xs, ys, grid_probabilities(model, xs, ys), points, labels, "label", title, show_scale=False
    )
    figure.update_traces(marker_size=4, selector={"mode": "markers"})  # a small panel: the regions show between
    return figure.update_layout(height=BOUNDARY_HEIGHT, margin={"t": 36, "b": 0, "l": 0, "r": 0}, showlegend=False)


def boundaries(run_id: str) -> None:
    """A 2-D run's student at its last saved epoch and its teacher, side by side, under its live curves."""
    if store.config(run_id).data.name != "toy2d" or not (epochs := route_epochs(store, run_id)):
        return
    home = str(store.home)
    figures = [boundary_figure(home, run_id, epochs[-1]), boundary_figure(home, run_id)]
    for column, figure, name in zip(st.columns(2), figures, ("student", "teacher"), strict=True):
        if figure is not None:
            column.plotly_chart(figure, key=f"train-boundary-{name}")


store = open_store()
initial = form_start()
st.title("Train")
form_column, live_column = st.columns([2, 3], gap="large")
with form_column:
    st.caption("Pick data, models, a method and its coefficients; Start it and watch it learn on the right.")
    start_area = st.container()  # Start and the run's YAML above the tabs: in sight whichever tab is open
    data_tab, models_tab, method_tab, training_tab = st.tabs(["Data", "Models", "Method", "Training"])

errors = FieldErrors()
with data_tab, link_warnings_in(start_area):
    names = [*EMBEDDED, *(n for n in DATASETS.names() if n not in EMBEDDED)]
    wanted = initial.get("data", names[0])
    data_name = st.selectbox(
        "dataset",
        names,
        index=names.index(link_start("data", wanted, wanted in names, names[0], "train:data")),
        key="train:data",
        help="toy2d, mnist1d and digits are generated or bundled; the image sets read files from `root`",
    )
    errors.slot("data")
    if initial.get("data", data_name) not in names:  # corrected above: the link's other values still count
        initial = {**initial, "data": data_name}
    start, base = starting_values(data_name, initial), preset(data_name)  # base: where a bad link value goes
    key = f"train:{data_name}"
with training_tab, link_warnings_in(start_area):
    cols = st.columns(2)
    with cols[0]:
        epochs = number("epochs", TrainingSection, "epochs", "epochs", start, key, errors)
        seed = number("seed", RunConfig, "seed", "seed", start, key, errors)
        lr = number("learning rate", OptimizerSection, "lr", "optimizer.lr", start, key, errors)
    with cols[1]:
        batch_size = number("batch size", TrainingSection, "batch_size", "batch_size", start, key, errors)
        optimizer = choice("optimizer", ["adam", "adamw", "sgd"], "optimizer.name", start, key, errors)
        run_name = st.text_input(
            "run name", value=start.get("output.name") or "", key=f"{key}:output.name", placeholder="automatic"
        )
    epochs_for_preview = epochs if isinstance(epochs, int) and 0 < epochs <= 10_000 else 1

with method_tab, link_warnings_in(start_area):
    method_name = choice("method", METHODS.names(), "method", start, key, errors, help="the KD method")
    method = METHODS.get(method_name)
    st.caption(summary(method))
    # the teacher's saved epochs (every one, this page's route), which RCO's anchors are picked among
    route = route_choices(st.session_state.get(f"{key}:teacher.epochs", start.get("teacher.epochs")))
    method_values, curves = params_widgets(
        method.Params,
        "method",
        start,
        f"{key}:method.{method_name}",
        errors,
        epochs_for_preview,
        fallback=base,
        context={"teacher_route": route},
    )
    if curves:
        st.markdown("**Schedule preview**: each coefficient at every epoch")
        st.plotly_chart(viz.schedule_figure(curves), key="schedule-preview")

with data_tab, link_warnings_in(start_area):
    data_params = DATASETS.get(data_name).Params
    main_fields = [f for f in data_params.model_fields if f != "name" and f not in ADVANCED_DATA]
    data_values, _ = params_widgets(
        data_params, "data", start, f"{key}:data", errors, 1, names=main_fields, fallback=base
    )
    with st.expander("splits and seeds of the data"):
        more, _ = params_widgets(
            data_params, "data", start, f"{key}:data", errors, 1, names=ADVANCED_DATA, fallback=base
        )
    data_section = {"name": data_name, **data_values, **more}
with models_tab, link_warnings_in(start_area):
    st.subheader("Student")
    student = model_form("student", "student", start, key, errors, epochs_for_preview)
    teacher = None
    if method.needs_teacher:
        st.subheader("Teacher")
        st.caption("Trained once with plain cross-entropy, then reused by every student that names the same recipe.")
        teacher_model = model_form("teacher", "teacher.model", start, key, errors, epochs_for_preview)
        cols = st.columns(2)
        with cols[0]:
            teacher_epochs = number("teacher epochs", TrainingSection, "epochs", "teacher.epochs", start, key, errors)
        with cols[1]:
            teacher_lr = number(
                "teacher learning rate", OptimizerSection, "lr", "teacher.optimizer.lr", start, key, errors
            )
        teacher = {"model": teacher_model, "epochs": teacher_epochs, "optimizer": {"name": "adam", "lr": teacher_lr}}

config_data = {
    "data": data_section,
    "student": student,
    "method": {"name": method_name, **method_values},
    "epochs": epochs,
    "batch_size": batch_size,
    "optimizer": {"name": optimizer, "lr": lr},
    "seed": seed,
    "probes": {"log_every": LOG_EVERY.get(data_name, 10)},
    # toy2d runs keep their weights after every epoch, for the decision boundaries page
    "output": {"name": run_name.strip() or None, "route": {"every": 1} if data_name == "toy2d" else None},
}
if teacher is not None:
    config_data["teacher"] = teacher

form = {
    **flat("data", data_section),
    **flat("student", student),
    **flat("method", config_data["method"]),
    "epochs": epochs,
    "batch_size": batch_size,
    "optimizer.name": optimizer,
    "optimizer.lr": lr,
    "seed": seed,
    "output.name": run_name.strip() or None,
}
specs = {"data": data_params, "student": MODELS.get(student["name"]).Params, "method": method.Params}
if teacher is not None:
    form |= {
        **flat("teacher.model", teacher["model"]),
        "teacher.epochs": teacher_epochs,
        "teacher.optimizer.lr": teacher_lr,
    }
    specs["teacher.model"] = MODELS.get(teacher["model"]["name"]).Params
written = {k: decode(encode(v)) for k, v in changed(form, data_name, specs).items() if v is not None}
st.session_state["train.written"] = written
run_param = query_param("run", None, options=set(store.runs(None).id))
st.query_params.from_dict({**{k: encode(v) for k, v in written.items()}, **({"run": run_param} if run_param else {})})

try:
    config, problems = validate_config(config_data), []
except ConfigError as error:
    config, problems = None, errors.show(str(error))
with start_area:
    if problems:
        st.error("Fix these before starting:\n\n" + "\n".join(f"- {escape(line)}" for line in problems))
    if st.button("Start", type="primary", disabled=config is None, width="stretch", key="train-start"):
        st.query_params["run"] = start_run(store, config)
    if config is not None:
        with st.expander("the run's config as YAML"):
            st.caption("for `python -m kdlib run CONFIG.yaml`")
            st.code(config.to_yaml(), language="yaml")

with live_column:
    if run_id := st.query_params.get("run"):  # checked above, or a run this click started
        live_panel(store, run_id, beside_curves=boundaries, height=CURVES_HEIGHT)
    else:
        st.info(
            "Start a run: its curves appear here as it trains, and on 2-D data (toy2d) the student's and the "
            "teacher's decision boundaries under them."
        )
