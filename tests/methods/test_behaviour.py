"""The refactored method contract trains every method exactly as the code before it did.

`behaviour_reference.npz` was recorded by `tests/methods/behaviour.py` at HEAD 0083da2, before the
methods became loss-only and the engine took over the gradient probe and the teacher cache: step
losses, epoch scalars (terms, coefficients, evaluation, route distances) and per-sample arrays
(the probe's included) of two epochs on fixed seeds. ProKT's cases were re-recorded when its teacher
step became the official code's (move_back_weight; eval-mode logits between the models).

DFA's cases were re-recorded when a route checkpoint's model came to be built without drawing from the
run's generators (before, loading the route for the probe ahead of training moved the numbers DFA's search
connectors were initialised with; loaded after the first step, it changed the run). Every other array is
byte-identical.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.methods.behaviour import CASES, REFERENCE, case_key, record

REFERENCE_ARRAYS = dict(np.load(REFERENCE))


@pytest.mark.parametrize(("name", "probe"), CASES, ids=[case_key(*case) for case in CASES])
def test_method_behaves_as_recorded_before_the_refactoring(name, probe):
    prefix = f"{case_key(name, probe)}/"
    expected = {k.removeprefix(prefix): v for k, v in REFERENCE_ARRAYS.items() if k.startswith(prefix)}
    assert expected, f"nothing recorded for {prefix}"
    got = record(name, probe)
    missing = sorted(set(expected) - set(got))
    assert not missing, f"no longer recorded: {missing}"
    for key, value in expected.items():
        np.testing.assert_allclose(got[key].astype(np.float64), value.astype(np.float64), rtol=1e-6, atol=1e-6,
                                   err_msg=key)
