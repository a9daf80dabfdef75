"""Property-based fuzzing of the door (issue 15, item 7): random mutations of valid configs.

- `validate_config` either returns a RunConfig or raises ConfigError, never another exception, whatever a
  config holds (keys dropped, types changed, nan, inf, negative and huge numbers, text, true/false, lists,
  unknown keys, wrong names), starting from the example configs and the tests' tiny config.
- A config it accepts does not fail on config grounds once it runs (slow: tiny runs of mutated tiny configs,
  sizes clamped so that each takes about a second).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdlib.config import ConfigError, apply_overrides
from kdlib.data import DATASETS
from kdlib.methods import METHODS
from kdlib.models import MODELS
from kdlib.runner import execute
from kdlib.store import RunStore
from kdlib.validation import read_config_file, validate_config
from tests.conftest import tiny_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BASES = [(path.name, read_config_file(path)) for path in sorted(CONFIGS.glob("*.yaml"))] + [("tiny", tiny_config())]
NAMES = [*DATASETS.names(), *MODELS.names(), *METHODS.names(), "SGD", "LambdaLR", "equal_interval", "greedy", "list"]

numbers = st.one_of(
    st.sampled_from([float("nan"), float("inf"), float("-inf"), -1, -1.5, 0, 0.0, 1e308, -1e308, 2**64, -(2**63),
                     1e-300]),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
PATHS = ["~nosuchuser/x.pt", "~", "/", "..", "", "a\x00b", "runs", "configs/quickstart.yaml", "20240101-120000-abcdef"]
scalars = st.one_of(numbers, st.booleans(), st.none(), st.text(max_size=12), st.sampled_from(NAMES + PATHS))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6,
)


def places(data, path=()) -> list[tuple]:
    """Every path into plain config data: mapping keys and list indices, at any depth."""
    found = [path] if path else []
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        found += places(value, (*path, key))
    return found


def parent_of(data, path: tuple):
    for key in path[:-1]:
        data = data[key]
    return data


# for the runs: values a hand might write for a coefficient or a setting, edge cases included
settings_values = st.one_of(
    st.sampled_from([0, 0.0, 1, -1, 0.5, 1e-8, 1e6, 1e30, 2, 100, None, True, False, "cosine", "sgd", [], [1], [[0, 1.0]]]),
    st.floats(-10, 1e4, allow_nan=False),
    st.integers(-5, 1000),
    st.fixed_dictionaries({"kind": st.sampled_from(["linear", "cosine", "step", "constant"]),
                           "start": st.floats(0, 10), "end": st.floats(0, 10)}),
)


@st.composite
def mutated(draw, bases=BASES, allowed=lambda path: True, values=values):
    """A base config with one to three mutations: a key dropped, a value replaced by anything (a wrong name
    among them), or an unknown key added to a mapping."""
    name, base = draw(st.sampled_from(bases))
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in places(data) if allowed(p)]
        kind = draw(st.sampled_from(["drop", "replace", "replace", "add"]))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, key = parent_of(data, path), path[-1]
        if kind == "drop":
            del parent[key]
        elif kind == "replace" or not isinstance(parent[key], dict):
            parent[key] = copy.deepcopy(draw(values))  # a copy: a later mutation must not change a sampled constant
        else:
            new = draw(st.text(min_size=1, max_size=10).filter(lambda k: k != "imports"))  # no user code
            parent[key][new] = copy.deepcopy(draw(values))
    return name, data


# random examples each run (no database written into the tree); a failure prints the blob that reproduces it
FAST = settings(max_examples=300, deadline=None, database=None, print_blob=True,
                suppress_health_check=list(HealthCheck))


@FAST
@given(mutated())
def test_validate_returns_or_refuses_with_a_config_error(case):
    name, data = case
    try:
        validate_config(data, folder=CONFIGS)
    except ConfigError as error:
        lines = str(error).splitlines()
        assert lines and all(line.strip() for line in lines), (name, str(error))


@FAST
@given(st.one_of(values, st.lists(values), st.text(max_size=20)))
def test_any_plain_data_is_returned_or_refused(data):
    try:
        validate_config(data)
    except ConfigError:
        pass


@FAST
@given(st.lists(st.text(max_size=30), min_size=1, max_size=2))
def test_any_set_text_is_applied_or_refused(overrides):
    try:
        validate_config(apply_overrides(tiny_config(), [o for o in overrides if not o.startswith("imports")]))
    except ConfigError:
        pass


@FAST
@given(st.binary(max_size=200))
def test_any_file_is_read_or_refused(tmp_path_factory, content):
    path = tmp_path_factory.getbasetemp() / "fuzzed.yaml"
    path.write_bytes(content)
    try:
        read_config_file(path)
    except ConfigError:
        pass


# --- accepted configs run --------------------------------------------------------------------------------

# Tiny bases, one per method (uda_pkd on a pair of toy2d sets), whose method params and coefficients the
# mutations change; what sets the run's size is clamped afterwards.
POINTS = {"name": "toy2d", "n_samples": 120}
RUNNABLE = [
    (method, tiny_config(method={"name": method, **params}, data=data, epochs=2, teacher__epochs=2))
    for method, params, data in [
        ("kd", {"temperature": 2.0, "w_ce": 0.1, "w_kd": 0.9}, POINTS),
        ("wsl", {"temperature": 4.0, "alpha": 2.25}, POINTS),
        ("dkd", {"alpha": 1.0, "beta": 8.0}, POINTS),
        ("label_smoothing", {"epsilon": 0.1}, POINTS),
        ("pskd", {"alpha_T": 0.8}, POINTS),
        ("rco", {"anchors": {"kind": "equal_interval", "num_anchors": 2}}, POINTS),
        ("ce", {}, POINTS),
        ("uda_pkd", {"temperature": 20.0}, {"name": "domain_pair", "source": POINTS, "target": POINTS}),
    ]
]
SIZES = ("n_samples", "epochs", "hidden", "batch_size", "probe_size", "target_probe_size", "route_probe_size")
FIELD = re.compile(r"\b(data|student|teacher|method|optimizer|lr_schedule|probes|output|seed|epochs|batch_size)"
                   r"(\.\w+)*\s*[:=]")


def mutable(path: tuple) -> bool:
    """Mutations keep to what a run reads as coefficients and settings, not to what sets its size or speed."""
    return path[0] in ("method", "optimizer", "lr_schedule", "teacher", "grad_clip", "probes") and not any(
        str(p) in (*SIZES, "model", "device", "compile", "name") for p in path
    )


def clamped(config):
    """The accepted config cut to a second or two of training."""
    small = {"epochs": min(config.epochs, 2), "batch_size": max(min(config.batch_size, 64), 16), "compile": False, "device": "cpu"}
    config = config.model_copy(update=small)
    if config.teacher is not None:
        teacher = config.teacher.model_copy(update={"epochs": min(config.teacher.epochs, 2),
                                                    "batch_size": max(min(config.teacher.batch_size, 64), 16)})
        config = config.model_copy(update={"teacher": teacher})
    return validate_config(config.to_dict())


@pytest.mark.slow
@settings(max_examples=30, deadline=None, database=None, print_blob=True, suppress_health_check=list(HealthCheck))
@given(mutated(RUNNABLE, mutable, settings_values))
def test_an_accepted_config_does_not_fail_on_config_grounds(case):
    method, data = case
    try:
        config = clamped(validate_config(data))
    except ConfigError:
        return  # refused at the door: nothing to run
    store = RunStore()
    run_id = store.create_run(config)
    if execute(run_id, store) == "done":
        return
    error = store.run(run_id)["error"] or ""
    # a loss that diverges (a huge learning rate) is training's outcome, which no check of the config can know
    assert error.startswith("NonFiniteLoss") or not FIELD.search(error), (method, config.to_dict(), error)
