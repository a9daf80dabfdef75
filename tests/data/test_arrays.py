"""The built-in `arrays` data set: .npz, .csv and .parquet files named relative to the config, errors that name
the file and the field."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from kdlib.data import load_data
from kdlib.data.arrays import Params
from kdlib.validation import load_config, validate_config
from tests.conftest import tiny_config

RNG = np.random.default_rng(0)
X = RNG.normal(size=(60, 3)).astype("float32")
Y = np.arange(60) % 3


def arrays_config(path, **data) -> dict:
    return tiny_config(data={"name": "arrays", "path": str(path), **data}, method={"name": "ce"}, teacher=None)


def test_an_npz_file_with_a_test_split_and_class_names(tmp_path):
    np.savez(tmp_path / "data.npz", x=X, y=Y, x_test=X[:9], y_test=Y[:9], class_names=np.array(["a", "b", "c"]))
    data = load_data(validate_config(arrays_config(tmp_path / "data.npz", val_fraction=0.25)).data)
    assert (len(data.train), len(data.val), len(data.test)) == (45, 15, 9)
    assert data.class_names == ["a", "b", "c"] and data.num_classes == 3 and data.input_shape == (3,)
    assert torch.equal(data.test.x, torch.from_numpy(X[:9])) and data.train.x.dtype == torch.float32


def test_the_path_starts_from_the_config_files_folder(tmp_path, monkeypatch):
    (tmp_path / "runs").mkdir()
    np.savez(tmp_path / "runs" / "data.npz", x=X, y=Y)
    (tmp_path / "runs" / "run.yaml").write_text("data: {name: arrays, path: data.npz}\nstudent: mlp\ndevice: cpu\n")
    monkeypatch.chdir(tmp_path)
    config = load_config("runs/run.yaml")
    assert config.data.path == str(tmp_path / "runs" / "data.npz")
    assert validate_config(config.to_dict()).data.path == config.data.path  # absolute once validated
    assert len(load_data(config.data).test) == 12


def test_a_csv_file_with_or_without_a_header_and_labels_as_text(tmp_path):
    frame = pd.DataFrame(X, columns=["a", "b", "c"]).assign(label=np.array(["cat", "dog", "emu"])[Y])
    frame.to_csv(tmp_path / "with_header.csv", index=False)
    frame.assign(label=Y).to_csv(tmp_path / "bare.csv", index=False, header=False)
    named = load_data(Params(path=str(tmp_path / "with_header.csv")))
    assert named.class_names == ["cat", "dog", "emu"] and named.input_shape == (3,)
    assert len(named.train) + len(named.val) + len(named.test) == 60
    bare = load_data(Params(path=str(tmp_path / "bare.csv")))
    assert bare.class_names is None and bare.num_classes == 3
    assert torch.equal(bare.train.y, named.train.y) and torch.allclose(bare.train.x, named.train.x)


def test_a_parquet_file_has_the_csv_layout(tmp_path):
    pd.DataFrame(X, columns=["a", "b", "c"]).assign(y=Y).to_parquet(tmp_path / "data.parquet")
    data = load_data(Params(path=str(tmp_path / "data.parquet"), test_fraction=0.5, val_fraction=0.0))
    assert (len(data.train), len(data.val), len(data.test), data.num_classes) == (30, 0, 30, 3)


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda p: None, "data.path: no such file {path}"),
        (lambda p: np.savez(p, x=X, labels=Y), "data.path \\({path}\\): has no array 'y' \\(it holds: x, labels\\)"),
        (lambda p: np.savez(p, x=X, y=Y, x_test=X), "x_test and y_test go together"),
        (lambda p: np.savez(p, x=X, y=Y[:5]), "x has 60 samples but y has 5"),
        (lambda p: np.savez(p, x=X, y=Y + 0.5), "y holds non-integer values; labels are class indices"),
    ],
)
def test_errors_name_the_file_and_the_field(tmp_path, write, message):
    path = tmp_path / "data.npz"
    write(path)
    with pytest.raises((ValueError, FileNotFoundError), match=message.format(path=path)):
        load_data(Params(path=str(path)))


def test_other_files_and_text_features_are_refused(tmp_path):
    with pytest.raises(ValueError, match=f"path\n.*{tmp_path / 'data.txt'} is not a .npz, .csv, .parquet file"):
        Params(path=str(tmp_path / "data.txt"))
    pd.DataFrame({"a": ["x", "y"], "b": [1, 2], "label": [0, 1]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError, match="feature columns must hold numbers; a do not"):
        load_data(Params(path=str(tmp_path / "t.csv")))


@pytest.mark.slow
def test_the_example_arrays_config_trains():
    from pathlib import Path

    from kdlib.runner import execute
    from kdlib.store import RunStore

    config = load_config(
        Path(__file__).resolve().parents[2] / "examples" / "arrays.yaml", ["epochs=2", "teacher.epochs=2"]
    )
    store = RunStore()
    assert execute(store.create_run(config), store) == "done"
