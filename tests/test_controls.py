"""One description of a config field's control, read off pydantic fields, for the app and the widgets alike."""

from __future__ import annotations

import pytest

from kdlib.config import RunConfig
from kdlib.controls import field_controls, parse_points, points_text, route_choices, schedule_preview, schedule_start
from kdlib.methods import METHODS
from kdlib.models import MODELS


def controls(params) -> dict:
    return {c.name: c for c in field_controls(params)}


def test_kinds_bounds_choices_and_help_come_from_the_fields():
    pskd = controls(METHODS.get("pskd").Params)
    assert list(pskd) == ["alpha_T", "buffer_dtype"]  # the Spec's name is its key, not a field to set
    assert (pskd["alpha_T"].kind, pskd["alpha_T"].ge, pskd["alpha_T"].le, pskd["alpha_T"].default) == (
        "number",
        0,
        1,
        0.8,
    )
    assert pskd["buffer_dtype"].kind == "choice" and pskd["buffer_dtype"].choices == ("float32", "float16")
    assert "past prediction" in pskd["alpha_T"].help
    mlp = controls(MODELS.get("mlp").Params)
    assert mlp["hidden"].kind == "list" and mlp["hidden"].plain(mlp["hidden"].default) == mlp["hidden"].default
    run = controls(RunConfig)
    assert (run["grad_clip"].kind, run["grad_clip"].optional, run["grad_clip"].gt) == ("number", True, 0)
    assert (run["epochs"].kind, run["amp"].kind, run["seed"].kind) == ("integer", "boolean", "integer")


def test_a_schedulable_field_keeps_its_bounds_for_every_value():
    temperature = controls(METHODS.get("wsl").Params)["temperature"]
    assert temperature.kind == "schedule" and temperature.gt == 0
    assert not temperature.accepts(0.0) and temperature.accepts(1.5)


def test_a_section_of_several_kinds_is_a_choice_of_variants_with_their_own_controls():
    anchors = controls(METHODS.get("rco").Params)["anchors"]
    assert anchors.kind == "variants" and [v.kind for v in anchors.variants] == ["equal_interval", "list", "greedy"]
    assert [v.label for v in anchors.variants] == ["n evenly spaced", "chosen epochs", "greedy"]
    chosen = {c.name: c for c in anchors.variant("list").fields}
    assert chosen["teacher_epochs"].choices_from == "teacher_route" and chosen["student_epochs"].optional
    assert [(c.name, c.kind) for c in anchors.variant("greedy").fields] == [
        ("rho", "number"),
        ("stage_epochs", "integer"),
        ("probe_size", "integer"),
    ]
    assert anchors.variant_start(anchors.default) == {"kind": "equal_interval", "num_anchors": None}
    assert anchors.variant_start({"kind": "nope"}) == anchors.variant_start(anchors.default)
    assert route_choices(4) == [1, 2, 3, 4] and route_choices(6, {"every": 3}) == [3, 6] and route_choices(None) == []


def test_a_plain_section_is_typed_as_yaml():
    hidden = controls(MODELS.get("mlp").Params)["hidden"]
    assert hidden.kind == "list" and not hidden.variants and hidden.hint.startswith("YAML")


@pytest.mark.parametrize(
    "value, start",
    [
        (4, {"kind": "constant", "value": 4.0}),
        ([[0, 8.0], [10, 4.0]], {"kind": "list", "points": [[0, 8.0], [10, 4.0]]}),
        ({"kind": "cosine", "start": 8.0, "end": 1.0}, {"kind": "cosine", "start": 8.0, "end": 1.0}),
        ({"start": 8.0}, {"kind": "constant", "value": 1.0}),  # no kind: the editor starts plain
    ],
)
def test_a_schedule_editor_starts_from_any_value(value, start):
    assert schedule_start(value) == start


def test_points_as_text_and_back_and_the_preview():
    assert points_text([[0, 8.0], [10, 4.0]]) == "0: 8, 10: 4"
    assert parse_points("0: 8, 10: 4") == [[0, 8], [10, 4]] == parse_points("[[0, 8], [10, 4]]")
    assert schedule_preview({"kind": "list", "points": parse_points("0: 8, 2: 4")}, 3) == [8, 8, 4]
    assert schedule_preview(2.5, 2) == [2.5, 2.5] and schedule_preview({"kind": "step", "start": 1}, 3) is None
