from __future__ import annotations

import pytest
import yaml

from kdlib.config import ConfigError
from kdlib.validation import load_config, validate_config
from tests.conftest import tiny_config


def error_of(**changes) -> str:
    with pytest.raises(ConfigError) as caught:
        validate_config(tiny_config(**changes))
    return str(caught.value)


def test_a_valid_config_round_trips_through_yaml(tmp_path):
    config = validate_config(tiny_config(method__temperature={"kind": "cosine", "start": 4, "end": 1}))
    path = tmp_path / "run.yaml"
    path.write_text(config.to_yaml())
    again = load_config(path)
    assert again == config
    assert yaml.safe_load(config.to_yaml())["method"]["w_ce"] == 0.1  # constants dump as plain numbers


def test_unknown_method_name_suggests_the_closest():
    assert error_of(method={"name": "kdd"}).startswith("method.name: 'kdd' is not a method; did you mean 'kd'")


def test_unknown_model_and_dataset_names_name_their_field():
    assert error_of(student={"name": "mpl"}).startswith("student.name: 'mpl' is not a model; did you mean 'mlp'")
    assert error_of(data={"name": "toy"}).startswith("data.name: 'toy' is not a dataset; did you mean 'toy2d'")
    assert error_of(teacher__model={"name": "cnn1"}).startswith("teacher.model.name: 'cnn1' is not a model")


def test_unknown_keys_are_refused_with_the_closest_field():
    assert error_of(method__temprature=3) == "method.temprature: unknown field; did you mean 'temperature'?"
    assert error_of(epoch=3) == "epoch: unknown field; did you mean 'epochs'?"
    assert error_of(optimizer__nme="sgd") == "optimizer.nme: unknown field; did you mean 'name'?"


def test_bad_values_name_the_field():
    assert error_of(optimizer__lr=-1).startswith("optimizer.lr: Input should be greater than 0")
    assert error_of(method__temperature=0).startswith("method.temperature: every value must be > 0")
    assert "method.temperature" in error_of(method__temperature={"kind": "cosin", "start": 1, "end": 2})
    assert error_of(device="tpu").startswith("device: Input should be 'auto', 'cpu', 'cuda' or 'mps'")


def test_a_method_that_needs_a_teacher_requires_one():
    config = tiny_config()
    del config["teacher"]
    with pytest.raises(ConfigError, match="teacher: method 'kd' needs a teacher"):
        validate_config(config)


def test_overrides_are_validated_the_same_way(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tiny_config()))
    assert load_config(path, ["method.temperature=8", "student.hidden=[4, 4]"]).method.temperature.value == 8
    with pytest.raises(ConfigError, match="method.temperature: every value must be > 0"):
        load_config(path, ["method.temperature=-2"])
    with pytest.raises(ConfigError, match="write path.to.field=value"):
        load_config(path, ["method.temperature"])


def test_missing_file_and_bad_yaml_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_example_configs_are_valid():
    from pathlib import Path

    paths = sorted(Path("configs").glob("*.yaml"))
    assert paths
    for path in paths:
        load_config(path, door=False)
        try:
            load_config(path)
        except ConfigError as error:  # only data this machine has not downloaded (Office-31)
            assert all(line.startswith("data.") for line in str(error).splitlines()), (path, str(error))
