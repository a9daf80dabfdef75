"""Bring your own: data sets, models and methods registered by name from a user's file, a config's
`imports:`, installed plugins, and the example of examples/ run from a folder outside the repo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

import kdlib
from kdlib import plugins, registry
from kdlib.config import ConfigError
from kdlib.data import DATASETS, DataBundle, load_data
from kdlib.data.base import tensor_bundle
from kdlib.methods import METHODS, Distiller
from kdlib.models import MODELS, build_model
from kdlib.plugins import register_dataset, register_method, register_model
from kdlib.spec import Spec
from kdlib.validation import load_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture(autouse=True)
def clean_registries(monkeypatch, tmp_path_factory):
    """Each test registers into registries restored afterwards, and imports user files afresh."""
    kept = {r: dict(r.items()) for r in (DATASETS, MODELS, METHODS)}  # kdlib's own, found first
    monkeypatch.setattr(plugins, "_IMPORTED", {})
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    for r, entries in kept.items():
        r._entries.clear()
        r._entries.update(entries)
    users = (str(tmp_path_factory.getbasetemp()), str(EXAMPLES))
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(users):
            del sys.modules[name]


def register_issue_example():
    """The issue's example, verbatim."""
    # fmt: off
    import numpy as np  # noqa: I001  (the issue's lines, as written)
    from torch import nn
    import kdlib

    @kdlib.register_model("tinynet")
    def tinynet(input_shape, num_classes, hidden: int = 16) -> nn.Module:
        """One hidden layer."""
        return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), hidden), nn.ReLU(),
                             nn.Linear(hidden, num_classes))

    @kdlib.register_dataset("breast_cancer")
    def breast_cancer(standardize: bool = True):
        """scikit-learn's breast cancer set."""
        from sklearn.datasets import load_breast_cancer
        x, y = load_breast_cancer(return_X_y=True)
        if standardize:
            x = (x - x.mean(0)) / x.std(0)
        return x.astype("float32"), y
    # fmt: on

    return tinynet, breast_cancer


def example_config(**changes) -> dict:
    return {
        "data": {"name": "breast_cancer"},
        "student": {"name": "tinynet", "hidden": 8},
        "teacher": {"model": {"name": "tinynet", "hidden": 32}, "epochs": 2},
        "method": {"name": "kd"},
        "epochs": 2,
        "device": "cpu",
        **changes,
    }


def test_the_issue_example_registers_a_model_and_a_data_set_that_a_config_names():
    tinynet, breast_cancer = register_issue_example()
    x, y = breast_cancer()  # the decorators hand the functions back unchanged
    assert x.shape == (569, 30) and tinynet((30,), 2).__class__.__name__ == "Sequential"
    config = validate_config(example_config())
    assert config.student.hidden == 8 and config.data.standardize is True
    data = load_data(config.data)
    assert (data.num_classes, data.input_shape) == (2, (30,))
    assert (len(data.train), len(data.val), len(data.test)) == (398, 57, 114)  # SplitParams' 0.1 / 0.2
    assert torch.equal(data.train.index, torch.arange(398))
    student = build_model(config.student, data.input_shape, data.num_classes)
    assert student[1].out_features == 8 and student.feature_taps == {"embedding": "2"}
    assert config.imports == [str(Path(__file__).resolve())]  # what a worker imports to find them


def test_fields_defaults_and_help_come_from_the_signature_and_the_docstring():
    @register_model("documented")
    def documented(input_shape, num_classes, width: int = 4, act="relu", scale: float = 1.0, drop: float = 0.0):
        """A documented net.

        Args:
            width (int): units of the hidden layer,
                before the activation
            act: the activation
        """
        return torch.nn.Linear(input_shape[0], num_classes)

    @register_dataset("numpydoc_set")
    def numpydoc_set(n: int = 50, noise: float = 0.1, val_fraction: float = 0.3):
        """Noisy points.

        Parameters
        ----------
        n : int
            how many points
        noise : float
            standard deviation of the noise
        """
        rng = np.random.default_rng(0)
        assert val_fraction == 0.3  # a split field the signature names is passed too
        return rng.normal(size=(n, 2)) * noise, rng.integers(0, 2, n)

    params = MODELS.get("documented").Params
    fields = params.model_fields
    assert params.__doc__ == "A documented net." and params(name="documented").width == 4
    assert fields["width"].description == "units of the hidden layer, before the activation"
    assert fields["act"].description == "the activation" and fields["act"].annotation is str
    assert fields["scale"].description is None and fields["scale"].default == 1.0
    data_fields = DATASETS.get("numpydoc_set").Params.model_fields
    assert data_fields["n"].description == "how many points"
    assert data_fields["noise"].description == "standard deviation of the noise"
    assert {"val_fraction", "test_fraction", "split_seed"} <= set(data_fields)
    assert data_fields["val_fraction"].default == 0.3
    with pytest.raises(ConfigError, match="student.width: expected an integer, got 'wide'"):
        validate_config({"data": "numpydoc_set", "student": {"name": "documented", "width": "wide"}})
    with pytest.raises(ConfigError, match="student.widht: unknown field; did you mean 'width'"):
        validate_config({"data": "numpydoc_set", "student": {"name": "documented", "widht": 3}})
    config = validate_config({"data": {"name": "numpydoc_set", "n": 40}, "student": "documented"})
    assert len(load_data(config.data).train) == 40 - 12 - 8


def test_sphinx_style_and_name_colon_lines_and_field_defaults_give_help_and_bounds():
    from pydantic import Field

    @register_model("sphinx")
    def sphinx(input_shape, num_classes, depth: int = Field(2, ge=1), width: int = 3):
        """Deep.

        :param depth: how many layers
        width: units per layer
        """
        return torch.nn.Linear(input_shape[0], num_classes)

    fields = MODELS.get("sphinx").Params.model_fields
    assert (fields["depth"].description, fields["width"].description) == ("how many layers", "units per layer")
    with pytest.raises(ConfigError, match="student.depth: Input should be greater than or equal to 1"):
        validate_config({"data": "toy2d", "student": {"name": "sphinx", "depth": 0}})


def _bundle(result, name="variant", **params) -> DataBundle:
    register_dataset(name)(lambda: result)
    return load_data(DATASETS.get(name).Params(**params))


def test_a_data_function_may_return_arrays_a_test_split_a_mapping_a_bundle_or_torch_datasets():
    x, y = np.random.default_rng(0).normal(size=(100, 3)).astype("float32"), np.arange(100) % 4
    pool = _bundle((x, y))
    assert (len(pool.train), len(pool.val), len(pool.test), pool.num_classes) == (70, 10, 20, 4)
    with_test = _bundle((x, y, x[:7], y[:7]), val_fraction=0.2)
    assert (len(with_test.train), len(with_test.val), len(with_test.test)) == (80, 20, 7)
    named = _bundle({"x": x, "y": np.array(["b", "a"] * 50)})
    assert named.class_names == ["a", "b"] and named.num_classes == 2
    bundle = tensor_bundle(torch.from_numpy(x), torch.from_numpy(y), 4, 0.5, 0.0, 0)
    assert _bundle(bundle) is bundle
    tensors = _bundle(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)))
    assert tensors.input_shape == (3,) and len(tensors.train) == 70

    class Points(Dataset):
        def __len__(self):
            return 30

        def __getitem__(self, i):
            return torch.full((2,), float(i)), i % 3

    loaded = _bundle((Points(), Points()), val_fraction=0.2)
    assert (len(loaded.train), len(loaded.val), len(loaded.test), loaded.num_classes) == (24, 6, 30, 3)
    batch = next(loaded.train.to("cpu").batches(8))
    assert batch.x.shape == (8, 2) and torch.equal(batch.x[:, 0].long() % 3, batch.y)
    with pytest.raises(TypeError, match="returned tuple of 3; return \\(x, y\\)"):
        _bundle((x, y, x))


def test_a_name_registered_by_two_definitions_is_an_error_naming_both():
    def first(input_shape, num_classes):
        return torch.nn.Linear(1, 1)

    def second(input_shape, num_classes):
        return torch.nn.Linear(1, 1)

    register_model("twice")(first)
    register_model("twice")(first)  # the same function again: no error
    with pytest.raises(
        ValueError, match=r"model 'twice' is registered twice: by .*first.*test_plugins.py.* and by .*second"
    ):
        register_model("twice")(second)
    with pytest.raises(ValueError, match="registered twice"):
        register_model("mlp")(first)  # a built-in name


def test_a_file_imported_twice_re_registers_without_error(tmp_path):
    (tmp_path / "twin.py").write_text(
        textwrap.dedent("""
        import kdlib

        @kdlib.register_model("twin")
        def twin(input_shape, num_classes, width: int = 2):
            import torch
            return torch.nn.Linear(input_shape[0], num_classes)
    """)
    )
    plugins.import_file(tmp_path / "twin.py")
    plugins._IMPORTED.clear()
    del sys.modules["twin"]
    plugins.import_file(tmp_path / "twin.py")  # executed again: new function objects, same definition
    assert "twin" in MODELS


def test_imports_are_files_relative_to_the_config_or_modules(tmp_path, monkeypatch):
    shutil.copy(EXAMPLES / "mine.py", tmp_path / "mine.py")
    (tmp_path / "configs").mkdir()
    config_path = tmp_path / "configs" / "run.yaml"
    config_path.write_text("imports: [../mine.py]\ndata: breast_cancer\nstudent: {name: tinynet, hidden: 8}\n")
    monkeypatch.chdir(ROOT)  # elsewhere: the path starts from the config's folder, not from here
    config = load_config(config_path)
    assert config.imports == [str(tmp_path / "mine.py")] and config.to_dict()["imports"] == config.imports
    assert "confident_kd" in METHODS and config.student.hidden == 8
    assert validate_config(config.to_dict()).imports == config.imports  # absolute: a worker reads it anywhere
    (tmp_path / "helper_mod.py").write_text(
        "import kdlib\nkdlib.register_model('by_module')(lambda input_shape, num_classes: None)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    validate_config({"imports": ["helper_mod"], "data": "toy2d", "student": "mlp"})
    assert "by_module" in MODELS


def test_a_missing_or_broken_import_is_a_config_error_naming_the_file(tmp_path):
    with pytest.raises(ConfigError, match=f"imports: no such file {tmp_path / 'nope.py'}"):
        validate_config({"imports": ["nope.py"], "data": "toy2d", "student": "mlp"}, folder=tmp_path)
    (tmp_path / "broken.py").write_text("import kdlib\n\nraise RuntimeError('no GPU here')\n")
    with pytest.raises(ConfigError, match=r"imports: .*broken.py, line 3: RuntimeError: no GPU here"):
        validate_config({"imports": ["broken.py"], "data": "toy2d", "student": "mlp"}, folder=tmp_path)
    assert "broken" not in sys.modules
    with pytest.raises(
        ConfigError, match="imports: 'no_such_module': ModuleNotFoundError.*a file needs its .py ending"
    ):
        validate_config({"imports": ["no_such_module"], "data": "toy2d", "student": "mlp"})
    with pytest.raises(ConfigError, match="imports: expected a list, got 'mine.py'"):
        validate_config({"imports": "mine.py", "data": "toy2d", "student": "mlp"})


def test_a_config_naming_entries_of_a_file_lists_that_file_in_imports(tmp_path):
    shutil.copy(EXAMPLES / "mine.py", tmp_path / "mine.py")
    plugins.import_file(tmp_path / "mine.py")  # as the app does after reading a run that imports it
    config = validate_config(example_config())  # built in a form: no imports written
    assert config.imports == [str(tmp_path / "mine.py")]


def test_a_run_whose_import_is_gone_fails_with_the_reason(tmp_path, kdlib_home):
    from kdlib.runner import execute
    from kdlib.store import RunStore

    shutil.copy(EXAMPLES / "mine.py", tmp_path / "mine.py")
    config = validate_config({**example_config(), "imports": ["mine.py"]}, folder=tmp_path)
    store = RunStore(kdlib_home)
    run_id = store.create_run(config)
    (tmp_path / "mine.py").unlink()
    plugins._IMPORTED.clear()
    assert execute(run_id, store) == "failed"
    assert "no such file" in store.run(run_id)["error"] and str(tmp_path / "mine.py") in store.run(run_id)["error"]


def test_launch_refuses_an_entry_defined_in_main():
    def notebook_net(input_shape, num_classes):
        return torch.nn.Linear(input_shape[0], num_classes)

    notebook_net.__module__ = "__main__"
    register_model("notebook_net")(notebook_net)
    with pytest.raises(
        ConfigError, match="notebook_net.*defined in __main__.*list that file under the config's `imports:`"
    ):
        kdlib.launch({"data": "toy2d", "student": "notebook_net", "device": "cpu"})


def test_register_method_takes_a_distiller_written_to_the_contract():
    class ScaledParams(Spec):
        scale: float = 1.0

    @register_method("scaled_ce")
    class ScaledCE(Distiller):
        Params = ScaledParams

        def loss(self, batch, student_logits, teacher_logits):
            from kdlib.methods import StepOutput

            return StepOutput(torch.nn.functional.cross_entropy(student_logits, batch.y) * self.params.scale)

    assert METHODS.get("scaled_ce") is ScaledCE
    assert (
        validate_config({"data": "toy2d", "student": "mlp", "method": {"name": "scaled_ce", "scale": 2}}).method.scale
        == 2
    )
    with pytest.raises(TypeError, match="register a subclass of kdlib.methods.Distiller"):
        register_method("not_one")(lambda: None)

    class Plain(Distiller):
        Params = dict

    with pytest.raises(TypeError, match="Plain.Params must be a subclass of kdlib.spec.Spec"):
        register_method("plain")(Plain)


def test_installed_plugins_load_once_on_first_registry_use_and_a_broken_one_warns(tmp_path, monkeypatch):
    (tmp_path / "good_plugin.py").write_text(
        "from kdlib.plugins import register_model\nregister_model('from_plugin')(lambda input_shape, num_classes: None)\n"
    )
    (tmp_path / "bad_plugin.py").write_text("raise ImportError('needs a library that is not installed')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    points = [EntryPoint("good", "good_plugin", "kdlib.plugins"), EntryPoint("bad", "bad_plugin", "kdlib.plugins")]
    asked = []
    monkeypatch.setattr(registry, "entry_points", lambda group: asked.append(group) or points)
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    with pytest.warns(
        UserWarning, match="kdlib plugin 'bad' \\(bad_plugin\\) could not be loaded: ImportError: needs a"
    ):
        registry.Registry("thing", package="kdlib.models").names()  # a registry's first use
    assert "from_plugin" in MODELS and asked == ["kdlib.plugins"]
    registry.load_entry_points()
    assert asked == ["kdlib.plugins"]  # once per process


# --- the example, from a folder outside the repository ------------------------------------------------


@pytest.fixture
def outside(tmp_path):
    """examples/mine.py and mine.yaml copied to a folder outside the repository, and an environment that finds kdlib."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    for name in ("mine.py", "mine.yaml"):
        shutil.copy(EXAMPLES / name, folder / name)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KDLIB_HOME": str(tmp_path / "home")}
    return folder, env


@pytest.mark.slow
def test_the_example_runs_from_a_folder_outside_the_repo_in_the_foreground(outside):
    folder, env = outside
    result = subprocess.run(
        [sys.executable, "-m", "kdlib", "run", "mine.yaml"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "kd tinynet on breast_cancer  [done]" in result.stdout


@pytest.mark.slow
def test_the_example_runs_through_launch_in_a_background_worker(outside):
    folder, env = outside
    code = textwrap.dedent("""
        import kdlib
        handle = kdlib.launch("mine.yaml", overrides=["method={name: confident_kd, gamma: 2}"])
        print(handle.wait(timeout=240), handle.info["error"])
        print(sorted(handle.metrics().columns))
    """)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=folder, env=env, capture_output=True, text=True, timeout=300
    )
    status, columns = result.stdout.strip().splitlines()[-2:]
    assert status == "done None", result.stdout + result.stderr
    assert "'train.loss_soft'" in columns and "'test.acc'" in columns  # the method of mine.py ran in the worker


@pytest.mark.slow
def test_the_train_form_shows_the_fields_of_registered_entries():
    from tests.app.conftest import open_page

    plugins.import_file(EXAMPLES / "mine.py")
    app = open_page("train", data="breast_cancer", student="tinynet", method="confident_kd")
    shown = {w.label: w for kind in ("selectbox", "number_input", "checkbox") for w in getattr(app, kind)}
    assert shown["dataset"].value == "breast_cancer" and shown["student model"].value == "tinynet"
    assert {"standardize", "hidden", "gamma"} <= set(shown)
    assert shown["gamma"].help == "the weight is p_teacher(true class)^gamma; 0 is Hinton KD"
