from __future__ import annotations

import subprocess
import sys


def test_engine_imports_no_front_end():
    code = (
        "import kdlib, kdlib.trainer, kdlib.runner, kdlib.sweep, sys; "
        "print([m for m in ('streamlit', 'ipywidgets', 'plotly') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr
