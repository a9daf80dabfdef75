"""The README's config reference is the one the code generates; its claims board is bench/claims.md."""

from __future__ import annotations

import re
from pathlib import Path

from kdlib.reference import config_reference

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_config_reference_is_current():
    text = README.read_text()
    match = re.search(r"<!-- config-reference:start -->\n(.*?)<!-- config-reference:end -->", text, re.S)
    assert match, "README.md lost its config-reference markers"
    assert match.group(1) == config_reference(), "the README is stale: make reference"


def test_readme_claims_board_is_the_measured_table():
    text = README.read_text()
    match = re.search(r"<!-- claims:start -->\n(.*?)<!-- claims:end -->", text, re.S)
    assert match, "README.md lost its claims markers"
    table = README.parent / "bench" / "claims.md"
    assert match.group(1) == table.read_text(), "the README's claims board is stale: python bench/claims.py --write"
