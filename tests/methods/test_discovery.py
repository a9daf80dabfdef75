"""A method is found by its file: a copy of a method file under a new name is a new method, with no
other edit (the registry finds it, `validate` and `run` accept it, the Train page lists it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import kdlib.methods

ROOT = Path(__file__).resolve().parents[2]

APP_CHECK = """
import sys
from tests.app.conftest import open_page
app = open_page("train", method=sys.argv[1])
box = app.selectbox(key="train:toy2d:method")
assert sys.argv[1] in box.options and box.value == sys.argv[1], (box.options, box.value)
shown = {w.label for kind in ("selectbox", "number_input", "text_input") for w in getattr(app, kind)}
assert "epsilon" in shown | {m.value.strip("*") for m in app.markdown}, shown
print("listed")
"""


@pytest.mark.slow
def test_a_copy_of_label_smoothing_under_a_new_name_is_a_working_method(tmp_path):
    name = f"smoothing_copy_{uuid.uuid4().hex[:8]}"
    copy = Path(kdlib.methods.__file__).with_name(f"{name}.py")
    shutil.copy(copy.with_name("label_smoothing.py"), copy)
    config = tmp_path / "copy.yaml"
    config.write_text(
        "data: {name: toy2d, n_samples: 200}\n"
        "student: {name: mlp, hidden: [8]}\n"
        f"method: {{name: {name}, epsilon: 0.2}}\n"
        "epochs: 1\nbatch_size: 32\ndevice: cpu\n"
    )
    env = {**os.environ, "KDLIB_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}

    def kdlib_cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "kdlib", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)

    try:
        validated = kdlib_cli("validate", str(config))
        assert validated.returncode == 0, validated.stderr
        assert f"name: {name}" in validated.stdout and "epsilon: 0.2" in validated.stdout
        run = kdlib_cli("run", str(config))
        assert run.returncode == 0 and "[done]" in run.stdout, run.stdout + run.stderr
        listed = subprocess.run([sys.executable, "-c", APP_CHECK, name], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=300)
        assert listed.returncode == 0 and "listed" in listed.stdout, listed.stdout + listed.stderr
    finally:
        copy.unlink()


def test_two_methods_in_one_file_are_refused_by_name(tmp_path, monkeypatch):
    from kdlib.methods.base import Distiller
    from kdlib.registry import Registry

    package = tmp_path / "my_methods"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "pair.py").write_text(
        "from kdlib.methods.base import Distiller\nclass A(Distiller):\n    pass\nclass B(Distiller):\n    pass\n"
    )
    (package / "helpers.py").write_text("def helper():\n    return 1\n")  # no method: not an entry
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("method", package="my_methods", one_per_file=Distiller)
    with pytest.raises(TypeError, match="one method per file, found A, B"):
        registry.names()


def test_a_method_file_is_registered_under_its_stem_and_a_helper_module_is_not(tmp_path, monkeypatch):
    from kdlib.methods.base import Distiller
    from kdlib.registry import Registry

    package = tmp_path / "more_methods"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "plain_ce.py").write_text("from kdlib.methods.ce import CrossEntropy\n"
                                         "class PlainCE(CrossEntropy):\n    pass\n")
    (package / "plain_ce_parts.py").write_text("from kdlib.methods.ce import CrossEntropy\n")  # imports, defines none
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("method", package="more_methods", one_per_file=Distiller)
    assert registry.names() == ["plain_ce"]
    assert registry.get("plain_ce").__name__ == "PlainCE"


@pytest.mark.slow
def test_a_new_model_file_and_a_new_data_file_are_found_with_no_other_edit(tmp_path):
    import kdlib.data
    import kdlib.models

    stem = f"extra_{uuid.uuid4().hex[:8]}"
    model_file = Path(kdlib.models.__file__).with_name(f"{stem}.py")
    data_file = Path(kdlib.data.__file__).with_name(f"{stem}.py")
    model_file.write_text(
        "from kdlib.models.base import MODELS\nfrom kdlib.models.simple import MLP\n"
        f"MODELS.register('{stem}_mlp')(type('Extra', (MLP,), {{}}))\n"
    )
    data_file.write_text(
        "from kdlib.data.base import DATASETS\nfrom kdlib.data.toy2d import Toy2D\n"
        f"DATASETS.register('{stem}_points')(type('Extra', (Toy2D,), {{}}))\n"
    )
    code = (f"from kdlib.models import MODELS; from kdlib.data import DATASETS; "
            f"print('{stem}_mlp' in MODELS, '{stem}_points' in DATASETS)")
    try:
        found = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        model_file.unlink()
        data_file.unlink()
    assert found.stdout.split() == ["True", "True"], found.stderr
