"""KD Explorer: the Streamlit entry. It only routes pages; each page is a file in app/pages_/."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run app/Home.py` from another folder still finds kdlib and app
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app.common import PAGES, escape, refuse_other_machines  # noqa: E402
from kdlib import warm  # noqa: E402
from kdlib.store import StoreError  # noqa: E402

# An emoji icon is drawn by the browser; a :material/...: one would be fetched from fonts.gstatic.com.
st.set_page_config(page_title="KD Explorer", page_icon="🎓", layout="wide")

refuse_other_machines()
warm.start_server()  # runs fork from it: a Start waits for no Python start nor torch import (once per server)


def _page(key: str, **kw) -> st.Page:
    path, title, icon = PAGES[key]
    return st.Page(path, title=title, icon=icon, **kw)


page = st.navigation(
    {
        "KD Explorer": [_page("home", default=True), _page("train"), _page("runs"), _page("sweeps")],
        "Look inside": [_page("inspect"), _page("route"), _page("boundaries"), _page("methods")],
        "Learn": [_page("temperature"), _page("lesson_route"), _page("lesson_pskd"), _page("lesson_wsl")],
    }
)
try:
    page.run()
except StoreError as error:  # a damaged, read-only or full store: what to do, on whatever page met it
    st.error(escape(str(error)))
