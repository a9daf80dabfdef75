"""The claims board on the Learn pages: bench/claims.md's measured rows, and links to their settings.

`bench/claims.py --write` measures each lesson's claim on a setting of `configs/claims/` and saves the
table; the pages read that file (shipped with the app, beside configs/) instead of repeating numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from app.common import train_button, train_query
from kdlib import load_config

ROOT = Path(__file__).resolve().parents[1]  # the repository, or kdlib_app/ when installed
TABLE = ROOT / "bench" / "claims.md"
SETTINGS = ROOT / "configs" / "claims"


def claims_table(ids: list[str] | None = None, path: Path = TABLE) -> tuple[str, str] | None:
    """(the table's preamble, its Markdown with only the rows of `ids`, all when None), or None without a file."""
    if not path.is_file():
        return None
    lines = path.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("| id |")), None)
    if start is None:
        return None
    rows = [line for line in lines[start + 2 :] if line.startswith("|")]
    if ids is not None:
        rows = [line for line in rows if line.split("|")[1].strip() in ids]
    return "\n".join(lines[:start]).strip(), "\n".join([lines[start], lines[start + 1], *rows])


def show_claims(ids: list[str] | None = None, title: str = "Measured: the claims board") -> None:
    """The rows of `ids` from bench/claims.md, with the command that measured them."""
    found = claims_table(ids)
    if found is None:
        st.caption("No claims board measured yet: `python bench/claims.py --write`.")
        return
    preamble, table = found
    st.markdown(f"**{title}**")
    st.markdown(table)
    st.caption(preamble)


def setting_config(setting: str, overrides: list[str] = ()):
    """The run config of a claims setting, `configs/claims/<setting>.yaml`."""
    return load_config(SETTINGS / f"{setting}.yaml", list(overrides))


def setting_button(label: str, setting: str, key: str, **changes: Any) -> None:
    """A lesson's "try it" button: Train filled in with exactly the claims setting (and `changes`)."""
    train_button(label, train_query(setting_config(setting)) | changes, key)
