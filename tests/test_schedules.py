from __future__ import annotations

import pytest

from kdlib.methods.kd import Params
from kdlib.schedules import schedule_curve


def curve(spec, epochs=5):
    return [round(v, 6) for v in schedule_curve(Params(temperature=spec).temperature, epochs)]


def test_each_kind_of_schedule():
    assert curve(4.0) == [4.0] * 5
    assert curve({"kind": "linear", "start": 1, "end": 5}) == [1, 2, 3, 4, 5]
    assert curve({"kind": "cosine", "start": 5, "end": 1}) == [5, 4.414214, 3, 1.585786, 1]
    assert curve({"kind": "step", "start": 8, "gamma": 0.5, "milestones": [2, 4]}) == [8, 8, 4, 4, 2]
    assert curve([[0, 4], [3, 2]]) == [4, 4, 4, 2, 2]
    assert curve({"kind": "linear", "start": 1, "end": 3, "start_epoch": 1, "end_epoch": 3}) == [1, 1, 2, 3, 3]


def test_bounds_hold_for_every_value_a_schedule_reaches():
    with pytest.raises(ValueError, match="every value must be > 0"):
        Params(temperature={"kind": "linear", "start": 4, "end": 0})
    with pytest.raises(ValueError, match="epochs must increase"):
        Params(temperature=[[3, 1], [0, 2]])
