"""Per-sample values are described where they are declared: `describe_value` by exact name, then by pattern."""

from __future__ import annotations

import re

import pytest

from kdlib.methods import METHODS, Value
from kdlib.methods.base import describe_value

VALUES = {
    "feature_loss": Value("feature loss", "the weighted sum over stages"),
    "feature_loss_{tap}": Value("feature loss at {tap}", "that stage's distance at {tap}"),
    "kl_head{n}": Value("KL(head {n+1} || head {n})", "head {n} against the next deeper one"),
}


def test_an_exact_name_is_found_before_a_pattern():
    assert describe_value(VALUES, "feature_loss") == VALUES["feature_loss"]
    assert describe_value(VALUES | {"feature_loss_total": Value("total", "")}, "feature_loss_total").label == "total"


def test_a_pattern_fills_its_placeholder_in_label_and_meaning():
    assert describe_value(VALUES, "feature_loss_stage1") == Value(
        "feature loss at stage1", "that stage's distance at stage1"
    )
    assert describe_value(VALUES, "kl_head2") == Value("KL(head 3 || head 2)", "head 2 against the next deeper one")


def test_an_undeclared_key_has_no_description():
    assert describe_value(VALUES, "weight") is None
    assert describe_value(VALUES, "kl_head") is None  # a placeholder matches one or more characters
    assert describe_value({}, "p_true_student") is None


@pytest.mark.parametrize("method", METHODS.names())
def test_every_declared_pattern_reads_as_a_label(method):
    for name, value in METHODS.get(method).per_sample_values.items():
        key = re.sub(r"\{\w+\}", "7", name)
        found = describe_value({name: value}, key)
        assert found is not None and not re.search(r"\{\w+([+-]\d+)?\}", found.label), (name, found)
