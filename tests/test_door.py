"""Validate is the run's door: what a run would fail on is refused before anything is written or trained,
one line per problem that names the field and the fix (issue 15, "Configs that pass validate fail only when run")."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from kdlib.__main__ import main
from kdlib.config import ConfigError
from kdlib.data import load_data
from kdlib.models import MODELS, build_model
from kdlib.runner import execute, launch
from kdlib.store import RunStore
from kdlib.teacher_cache import random_augmentation
from kdlib.validation import load_config, validate_config
from tests.conftest import tiny_config


def refusal(**changes) -> str:
    with pytest.raises(ConfigError) as caught:
        validate_config(tiny_config(**changes))
    return str(caught.value)


def file_refusal(path, overrides=()) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, list(overrides))
    return str(caught.value)


def write(tmp_path, text: str, name: str = "run.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# --- numbers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, shown", [(".inf", "inf"), (".nan", "nan"), ("-.inf", "-inf")])
def test_a_non_finite_temperature_is_refused(tmp_path, value, shown):
    config = yaml.safe_dump(tiny_config()).replace("temperature: 2.0", f"temperature: {value}")
    assert file_refusal(write(tmp_path, config)) == f"method.temperature: expected a finite number, got {shown}"


def test_non_finite_numbers_are_refused_anywhere():
    assert refusal(optimizer__lr=float("inf")) == "optimizer.lr: expected a finite number, got inf"
    assert refusal(optimizer__lr="nan") == "optimizer.lr: expected a finite number, got 'nan'"
    assert refusal(method__temperature={"kind": "cosine", "start": float("nan"), "end": 1}) == (
        "method.temperature.start: expected a finite number, got nan"
    )
    # a torch optimizer's own argument, which no field of kdlib types
    assert refusal(optimizer={"name": "SGD", "lr": 0.1, "dampening": float("inf")}) == (
        "optimizer.dampening: expected a finite number, got inf"
    )


def test_a_bool_is_no_number():
    assert refusal(optimizer__lr=True) == "optimizer.lr: expected a number, got true"
    assert refusal(epochs=False) == "epochs: expected an integer, got false"
    assert refusal(student__hidden=[8, True]) == "student.hidden.1: expected an integer, got true"
    assert refusal(teacher__route={"epochs": [1, True]}) == "teacher.route.epochs.1: expected an integer, got true"
    assert validate_config(tiny_config(amp=True, teacher__cache={"enabled": True})).amp  # a bool where one is due


def test_a_schedulable_field_says_it_takes_a_number_or_a_schedule():
    expected = "expected a number or a schedule ({kind: cosine, start: 8, end: 2}, or [[epoch, value], ...])"
    assert refusal(method__temperature="hot") == f"method.temperature: {expected}, got 'hot'"
    assert refusal(method__w_kd=True) == f"method.w_kd: {expected}, got true"


def test_type_errors_say_the_type_expected():
    assert refusal(optimizer__lr="fast") == "optimizer.lr: expected a number, got 'fast'"
    assert refusal(epochs=2.5) == "epochs: expected a whole number, got 2.5"
    assert refusal(optimizer="adam").startswith("optimizer: expected a section (a mapping of its fields), got 'adam'")
    assert refusal(method__anchors="x", method__name="rco").startswith("method.anchors: ")


def test_seeds_stay_in_the_range_every_generator_takes():
    assert refusal(seed=-1) == "seed: Input should be greater than or equal to 0"
    assert refusal(data__split_seed=2**32).startswith("data.split_seed: Input should be less than or equal to")


def test_a_torch_class_that_needs_an_argument_not_given_is_refused():
    assert refusal(lr_schedule={"name": "LambdaLR"}) == (
        "lr_schedule.name: torch.optim.lr_scheduler.LambdaLR needs lr_lambda; write lr_lambda: ... beside name, "
        "or pick another class"
    )


# --- the teacher's route and checkpoint -----------------------------------------------------------


def test_rco_anchors_the_teacher_never_saves_are_refused():
    anchors = {"kind": "list", "teacher_epochs": [1, 5, 50]}
    assert refusal(method={"name": "rco", "anchors": anchors}, teacher__epochs=2) == (
        "method.anchors.teacher_epochs: 5, 50 are not on the teacher's route (teacher.route saves epochs [1, 2] of "
        "teacher.epochs: 2); choose anchors among [1, 2], or save those epochs (teacher.route: {epochs: [...]}, with "
        "teacher.epochs at least the last)"
    )


def test_more_rco_anchors_than_the_route_has_are_refused_with_what_it_has():
    anchors = {"kind": "equal_interval", "num_anchors": 50}
    assert refusal(method={"name": "rco", "anchors": anchors}, teacher__epochs=2) == (
        "method.anchors.num_anchors: 50 anchors, but the teacher's route has 2 saved epochs (teacher.route saves "
        "epochs [1, 2] of teacher.epochs: 2); set num_anchors: 2 or less, or save more epochs (teacher.route)"
    )
    sparse = refusal(method={"name": "rco", "anchors": {"kind": "equal_interval", "num_anchors": 3}},
                     teacher__epochs=9, teacher__route={"epochs": [1, 2, 9]}, epochs=4)
    assert "saved epochs (teacher.route saves epochs [1, 2, 9] of teacher.epochs: 9), spread evenly, give 1: [9]; " \
           "set num_anchors: 1 or less" in sparse


def test_rco_anchors_need_a_student_epoch_each_and_student_epochs_inside_the_run():
    anchors = {"kind": "list", "teacher_epochs": [1, 2, 3]}
    assert refusal(method={"name": "rco", "anchors": anchors}, epochs=2) == (
        "method.anchors: 3 anchors ([1, 2, 3]) need one student epoch each, and the run has 2 (epochs); raise "
        "epochs or use fewer anchors"
    )
    late = {**anchors, "student_epochs": [0, 1, 5]}
    assert refusal(method={"name": "rco", "anchors": late}).startswith(
        "method.anchors.student_epochs: 5 is past the run's last epoch (2, 0-based)"
    )


def test_rco_default_anchors_fit_a_short_route():
    config = validate_config(tiny_config(method={"name": "rco"}, teacher__epochs=2))
    assert config.method.anchors.num_anchors is None  # 4, or as many as the route and the run allow


def test_route_epochs_past_the_end_of_training_are_refused():
    assert refusal(teacher__route={"epochs": [1, 5]}) == (
        "teacher.route.epochs: 5 is outside the 3 epochs of training (teacher.epochs), so never saved; keep epochs "
        "0..3 or raise teacher.epochs"
    )
    assert refusal(output={"route": {"epochs": [2, 9]}}).startswith("output.route.epochs: 9 is outside the 3 epochs")


def test_a_missing_teacher_checkpoint_is_refused(tmp_path, kdlib_home):
    assert refusal(teacher__checkpoint=str(tmp_path / "teacher.pt")).startswith(
        f"teacher.checkpoint: {tmp_path / 'teacher.pt'} is neither a weights file, a folder with model.pt, nor a run "
        f"id in the store {kdlib_home}"
    )
    (tmp_path / "folder").mkdir()
    assert refusal(teacher__checkpoint=str(tmp_path / "folder")).startswith(
        f"teacher.checkpoint: the folder {tmp_path / 'folder'} has no model.pt"
    )


def test_teacher_weights_that_do_not_fit_the_model_or_are_no_weights_are_refused(tmp_path):
    weights = tmp_path / "teacher.pt"
    torch.save(build_model(MODELS.get("mlp").Params(hidden=[32, 32]), (2,), 2).state_dict(), weights)
    assert validate_config(tiny_config(teacher__checkpoint=str(weights)))  # teacher.model: mlp [32, 32]
    assert refusal(teacher__checkpoint=str(weights), teacher__model={"name": "mlp", "hidden": [16]}).startswith(
        f"teacher.checkpoint: {weights} does not fit teacher.model (mlp): Unexpected key(s) in state_dict"
    )
    three = {"name": "toy2d", "shape": "blobs", "num_classes": 3}
    assert "size mismatch for fc.weight" in refusal(teacher__checkpoint=str(weights), data=three)
    text = write(tmp_path, "not: weights", "notes.pt")
    assert refusal(teacher__checkpoint=str(text)).startswith(
        f"teacher.checkpoint: {text} is not a weights file torch can load ("
    )


def test_a_run_id_of_another_store_is_left_to_the_run(tiny):
    assert tiny(teacher__checkpoint="20240101-120000-abcdef").teacher.checkpoint == "20240101-120000-abcdef"


def test_rco_on_a_checkpoint_reads_its_route_files(tiny, tmp_path):
    (tmp_path / "t" / "route").mkdir(parents=True)
    torch.save(build_model(MODELS.get("mlp").Params(hidden=[32, 32]), (2,), 2).state_dict(), tmp_path / "t" / "model.pt")
    for name in ("route/epoch_0001.pt", "route/epoch_0003.pt"):
        (tmp_path / "t" / name).touch()  # only their names are read before the run
    anchors = {"kind": "list", "teacher_epochs": [2, 3]}
    assert refusal(method={"name": "rco", "anchors": anchors}, teacher__checkpoint=str(tmp_path / "t")).startswith(
        f"method.anchors.teacher_epochs: 2 is not on the teacher's route (the route files of teacher.checkpoint "
        f"{tmp_path / 't'} hold epochs [1, 3])"
    )


# --- data ---------------------------------------------------------------------------------------------


def test_data_files_and_folders_that_do_not_exist_are_refused(tmp_path):
    assert refusal(data={"name": "arrays", "path": str(tmp_path / "x.npz")}).startswith(
        f"data.path: no file {tmp_path / 'x.npz'}; point data.path at a .npz, .csv, .parquet file"
    )
    assert refusal(data={"name": "image_folder", "root": str(tmp_path / "images")}).startswith(
        f"data.root: {tmp_path / 'images'} is not a folder"
    )
    assert refusal(data={"name": "cifar10", "root": str(tmp_path)}).startswith(
        f"data.root: no cifar-10-batches-py/ under {tmp_path}"
    )
    assert validate_config(tiny_config(data={"name": "cifar10", "root": str(tmp_path), "download": True}))
    office = refusal(data={"name": "domain_pair", "preset": "office31", "root": str(tmp_path)})
    assert office.startswith(f"data.root: no folder {tmp_path}/amazon/images, {tmp_path}/webcam/images")
    pair = {"name": "domain_pair", "source": {"name": "toy2d"}, "target": {"name": "arrays", "path": "t.npz"}}
    assert refusal(data=pair).startswith("data.target.path: no file")


def test_a_path_of_a_user_this_machine_has_not_is_refused_not_raised():
    assert refusal(teacher__checkpoint="~nosuchuser/t.pt").startswith("teacher.checkpoint: ~nosuchuser/t.pt is neither")
    assert refusal(data={"name": "image_folder", "root": "~nosuchuser"}).startswith("data.root: ~nosuchuser is not")
    assert refusal(imports=["~nosuchuser/mine.py"]).startswith("imports: no such file")


def test_a_reader_of_a_stored_config_is_not_refused_for_files_gone_since(tmp_path):
    config = tiny_config(data={"name": "image_folder", "root": str(tmp_path / "gone")}, method={"name": "ce"})
    assert validate_config(config, door=False).data.root == str(tmp_path / "gone")


def test_uda_pkd_without_a_target_domain_is_refused():
    assert refusal(method={"name": "uda_pkd"}) == (
        "data: method 'uda_pkd' adapts to an unlabelled target domain, which data 'toy2d' has not; use a domain "
        "pair, e.g. data: {name: domain_pair, preset: toy2d_shift}, or data: {name: domain_pair, source: {...}, "
        "target: {...}}"
    )
    assert validate_config(tiny_config(method={"name": "uda_pkd"}, data={"name": "domain_pair", "preset": "toy2d_shift"}))


def test_a_model_that_cannot_take_the_data_is_refused():
    assert refusal(student={"name": "cnn2d"}) == (
        "student: model 'cnn2d' cannot take the samples of data 'toy2d' (shape [2]): model 'cnn2d' takes images of "
        "shape [C, H, W]; the data has samples of shape [2]"
    )
    deep = {"name": "cnn2d", "channels": [8, 8, 8, 8]}  # four poolings of an 8x8 digit
    assert refusal(student=deep, data={"name": "digits"}).startswith(
        "student: model 'cnn2d' cannot take the samples of data 'digits' (shape [1, 8, 8]): Given input size"
    )
    assert refusal(teacher__model={"name": "resnet8"}).startswith("teacher.model: model 'resnet8' cannot take")


def test_feature_methods_need_the_taps_they_name():
    assert refusal(method={"name": "lsskd", "taps": ["stage9"]}) == (
        "method.taps: 'stage9' is not a feature tap of the student; it has stage1, embedding"
    )
    pair = {"name": "domain_pair", "preset": "toy2d_shift"}
    assert refusal(method={"name": "uda_pkd", "feature_tap": "pool"}, data=pair) == (
        "method.feature_tap: 'pool' is not a feature tap of the teacher; it has stage1, stage2, embedding"
    )
    assert refusal(method={"name": "dfa"}, student={"name": "mlp", "hidden": []}).startswith(
        "method: 'dfa' distils stage features, and the student has no stage taps (it has embedding)"
    )
    assert refusal(method={"name": "dfa", "stages": [1, 3]}) == (
        "method.stages: [1, 3], but the student has stages 1..1"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_device_this_machine_lacks_is_refused():
    assert refusal(device="cuda") == "device: cuda, but torch finds no CUDA device on this machine; use device: auto or cpu"


def write_images(root, broken: dict[str, bytes]):
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(root / c / f"{i}.png")
    for name, content in broken.items():
        (root / name).write_bytes(content)
    return root


def test_a_corrupt_or_empty_image_is_named_when_the_folder_is_indexed(tmp_path):
    root = write_images(tmp_path / "imgs", {"cat/empty.png": b"", "dog/bad.jpg": b"not an image"})
    spec = validate_config(tiny_config(data={"name": "image_folder", "root": str(root), "num_workers": 0})).data
    with pytest.raises(ValueError) as caught:
        load_data(spec)
    assert str(caught.value).startswith(
        f"data.root: 2 of 10 images cannot be read: {root}/cat/empty.png: an empty file; {root}/dog/bad.jpg: not a "
        "readable image"
    )


def test_a_run_on_a_corrupt_image_fails_with_the_file_not_a_traceback(tmp_path):
    root = write_images(tmp_path / "imgs", {"dog/bad.png": b"\x89PNG garbage"})
    data = {"name": "image_folder", "root": str(root), "image_size": 8, "num_workers": 0, "val_fraction": 0.25,
            "test_fraction": 0.25}
    store = RunStore()
    run_id = store.create_run(validate_config(tiny_config(data=data, method={"name": "ce"}, epochs=1)))
    assert execute(run_id, store) == "failed"
    error = store.run(run_id)["error"]
    assert f"{root}/dog/bad.png: not a readable image" in error and "Traceback" not in error


def test_the_cache_judges_augmentation_by_the_training_side_only():
    side = {"name": "cifar10", "download": True}
    pair = validate_config(tiny_config(
        data={"name": "domain_pair", "source": side, "target": {**side, "augment": True}}, method={"name": "ce"}
    )).data
    assert random_augmentation(pair) is None  # the target's views never reach the cached training split
    flipped = pair.model_copy(update={"source": pair.target})
    assert random_augmentation(flipped) == "data.source.augment"


# --- the file and the command line -----------------------------------------------------------------


def test_a_key_given_twice_is_refused_with_its_line(tmp_path):
    path = write(tmp_path, "data: {name: toy2d}\nstudent: {name: mlp}\nepochs: 3\nepochs: 5\n")
    assert file_refusal(path) == f"{path}: line 4: key 'epochs' is given twice (first on line 3); keep one"
    nested = write(tmp_path, "data: {name: toy2d}\nstudent:\n  name: mlp\n  name: cnn1d\n", "nested.yaml")
    assert "line 4: key 'name' is given twice (first on line 3)" in file_refusal(nested)


def test_a_merge_key_may_be_overridden(tmp_path):
    path = write(tmp_path, "data: {name: toy2d}\nstudent: {<<: {name: mlp, hidden: [4]}, hidden: [8]}\n")
    assert load_config(path).student.hidden == [8]


def test_a_file_that_is_not_utf8_text_or_a_folder_is_refused(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("data: {name: toy2d}\n# caf\xe9\n".encode("latin-1"))
    assert file_refusal(path) == (
        f"{path}: not UTF-8 text (byte 0xe9 at offset 25); a config is a YAML text file saved as UTF-8"
    )
    assert file_refusal(tmp_path) == f"{tmp_path}: a folder, not a config file; give a run's YAML file, e.g. " \
                                     "configs/quickstart.yaml"
    binary = tmp_path / "weights.yaml"
    binary.write_bytes(b"\x00\x01\x02")
    assert "not valid YAML" in file_refusal(binary)
    assert file_refusal(write(tmp_path, "- a\n- b\n", "list.yaml")) == "config: expected a mapping of sections, got list"


def test_set_values_that_are_not_yaml_are_refused(tmp_path):
    path = write(tmp_path, yaml.safe_dump(tiny_config()))
    assert file_refusal(path, ["method.temperature=[1,"]) == (
        "--set 'method.temperature=[1,': '[1,' is not a YAML value (expected the node content, but found "
        "'<stream end>'); close its brackets and quotes, e.g. [1, 2] for a list"
    )
    assert file_refusal(path, ["method..temperature=1"]).startswith("--set 'method..temperature=1': ")
    assert file_refusal(path, ["method={a: 1, a: 2}"]).startswith("--set 'method={a: 1, a: 2}': ")


def test_the_cli_prints_one_line_per_problem_and_no_traceback(tmp_path, capsys):
    path = write(tmp_path, yaml.safe_dump(tiny_config()))
    for argv in (["validate", str(path), "--set", "method.temperature=[1,"], ["validate", str(tmp_path)],
                 ["run", str(path), "--set", "optimizer.lr=true"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err and len(err.splitlines()) == 1, err


def test_launch_writes_nothing_for_a_refused_config(kdlib_home):
    with pytest.raises(ConfigError, match="method.temperature: expected a finite number"):
        launch(tiny_config(method__temperature=float("inf")))
    assert not kdlib_home.exists()
    with pytest.raises(ConfigError, match="imports: expected a list, got 'mine.py'"):
        validate_config({**tiny_config(), "imports": "mine.py"})
