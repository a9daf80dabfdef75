"""The teacher-output cache: computed once, reused, the same training, refused where it would lie."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time

import numpy as np
import pytest
import torch

from kdlib.config import ConfigError
from kdlib.data import load_data
from kdlib.models import build_model
from kdlib.runner import execute
from kdlib.store import RunStore
from kdlib.teacher_cache import TeacherOutputs, _teacher_pass, cache_wanted, load_or_compute
from kdlib.teachers import TeacherArtifact
from kdlib.validation import validate_config
from tests.conftest import tiny_config
from tests.data.test_image_folder import write_folder

NO_PROBE = {"route_probe_size": 0, "log_every": 2}  # the route probe forwards route checkpoints: not counted here


@pytest.fixture
def teacher_forwards(monkeypatch):
    """The weights file of every forward pass through a teacher (or route checkpoint) built from an artifact."""
    calls: list[str] = []
    build = TeacherArtifact._model

    def counted(self, data, weights):
        model = build(self, data, weights)
        model.register_forward_hook(lambda *_: calls.append(weights.name))
        return model

    monkeypatch.setattr(TeacherArtifact, "_model", counted)
    return calls


def run(store: RunStore, config) -> str:
    run_id = store.create_run(config)
    assert execute(run_id, store) == "done", store.run(run_id)["error"]
    return run_id


def outputs_dir(store: RunStore):
    (folder,) = [p for p in (store.home / "teachers").iterdir() if (p / "model.pt").exists()]
    return folder / "outputs"


def test_the_cache_is_computed_once_and_reused(tiny, teacher_forwards):
    store = RunStore()
    first = run(store, tiny(probes=NO_PROBE))
    n_train = len(store.per_sample(first, 0)["label"])
    assert teacher_forwards == ["model.pt"] * -(-n_train // 256)  # one pass, batches of twice the teacher's 128
    (cache,) = outputs_dir(store).glob("*.npy")
    key = json.loads(cache.with_suffix(".json").read_text())
    assert key["weights"] == "final" and key["split"] == "train" and key["data"]["name"] == "toy2d"
    assert np.load(cache).shape == (n_train, 2)

    teacher_forwards.clear()
    run(store, tiny(seed=1, probes=NO_PROBE))  # another student of the same teacher: no teacher forward at all
    assert teacher_forwards == []
    run(store, tiny(probes=NO_PROBE, teacher__cache={"enabled": False}))
    assert len(teacher_forwards) == 3 * -(-n_train // 32)  # off: one forward per step


def test_two_runs_needing_one_cache_compute_it_once(tmp_path):
    computed = []

    def compute(out):
        computed.append(1)
        time.sleep(0.2)
        out[:] = 1.0

    threads = [
        threading.Thread(target=load_or_compute, args=(tmp_path / "c.npy", {}, (4, 3), "float32", compute))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(computed) == 1 and np.load(tmp_path / "c.npy").sum() == 12
    assert not list(tmp_path.glob("*.tmp"))


def test_training_with_the_cache_matches_training_without(tiny):
    store = RunStore()
    runs = {
        cache: run(store, tiny(teacher__cache={"enabled": cache != "off", "dtype": cache.replace("off", "float32")}))
        for cache in ("off", "float32", "float16")
    }
    losses = {k: store.epoch_metrics(r)["train.loss"].to_numpy() for k, r in runs.items()}
    samples = {k: store.per_sample(r, 2) for k, r in runs.items()}
    np.testing.assert_allclose(losses["float32"], losses["off"], rtol=1e-5)
    np.testing.assert_allclose(losses["float16"], losses["off"], rtol=1e-3)
    for key in ("p_true_teacher", "kl", "p_true_student"):
        np.testing.assert_allclose(samples["float32"][key], samples["off"][key], atol=1e-4)
        np.testing.assert_allclose(samples["float16"][key], samples["off"][key], atol=3e-3)
    dtypes = {np.load(p, mmap_mode="r").dtype.name for p in outputs_dir(store).glob("*.npy")}
    assert dtypes == {"float32", "float16"}


def test_rco_anchors_come_from_the_cache(tiny, teacher_forwards):
    store = RunStore()
    rco = {"name": "rco", "temperature": 2.0, "anchors": {"kind": "equal_interval", "num_anchors": 3}}
    plain = run(store, tiny(method=rco, probes=NO_PROBE, teacher__cache={"enabled": False}))
    teacher_forwards.clear()
    cached = run(store, tiny(method=rco, probes=NO_PROBE))
    weights = sorted(json.loads(p.read_text())["weights"] for p in outputs_dir(store).glob("*.json"))
    assert weights == ["final", "route epoch 1", "route epoch 2", "route epoch 3"]
    assert set(teacher_forwards) == {"model.pt", "epoch_0001.pt", "epoch_0002.pt", "epoch_0003.pt"}  # one pass each
    teacher_forwards.clear()
    again = run(store, tiny(method=rco, probes=NO_PROBE, seed=1))
    assert teacher_forwards == [] and store.run(again)["status"] == "done"
    for epoch in range(3):
        a, b = store.per_sample(plain, epoch), store.per_sample(cached, epoch)
        for key in ("p_true_anchor", "p_true_teacher", "kl_anchor", "kl_final"):
            np.testing.assert_allclose(b[key], a[key], atol=1e-4, err_msg=key)
    np.testing.assert_allclose(
        store.epoch_metrics(cached)["train.loss"], store.epoch_metrics(plain)["train.loss"], rtol=1e-5
    )


def test_a_user_checkpoint_is_not_written_into(tiny, tmp_path):
    store = RunStore()
    teacher_run = run(store, tiny(method={"name": "ce"}, student={"name": "mlp", "hidden": [32, 32]}))
    mine = tmp_path / "mine"
    mine.mkdir()
    weights = mine / "teacher.pt"
    shutil.copy(store.run_dir(teacher_run) / "model.pt", weights)
    run(store, tiny(teacher__checkpoint=str(weights)))
    assert [p.name for p in mine.iterdir()] == ["teacher.pt"]
    assert len(list((store.home / "teachers" / "outputs").glob("*.npy"))) == 1
    os.utime(weights, ns=(1, 1))  # the file changed: its outputs are computed again, into a new file
    run(store, tiny(teacher__checkpoint=str(weights)))
    assert len(list((store.home / "teachers" / "outputs").glob("*.npy"))) == 2


def image_config(root, **cache) -> dict:
    return {
        "data": {"name": "image_folder", "root": str(root), "image_size": 16, "augment": True, "num_workers": 0},
        "student": {"name": "mlp", "hidden": [8]},
        "teacher": {"model": {"name": "mlp", "hidden": [16]}, "epochs": 1, "cache": cache},
        "method": {"name": "kd"},
        "epochs": 2,
        "batch_size": 4,
        "device": "cpu",
        "probes": NO_PROBE,
    }


def test_random_augmentation_is_refused_unless_views_are_drawn(tmp_path):
    root = write_folder(tmp_path / "images", 4)
    with pytest.raises(ConfigError) as refused:
        validate_config(image_config(root, enabled=True))
    assert str(refused.value) == (
        "teacher.cache.enabled: the training data uses random augmentation (data.augment: true); set "
        "data.augment: false, or teacher.cache.augment_draws: N to cache N augmented views per sample"
    )
    auto = validate_config(image_config(root))  # auto: no cache, no error
    assert not cache_wanted(auto, load_data(auto.data))
    drawn = validate_config(image_config(root, enabled=True, augment_draws=3))
    assert cache_wanted(drawn, load_data(drawn.data))
    plain = image_config(root, augment_draws=2)
    plain["data"]["augment"] = False
    with pytest.raises(ConfigError, match="teacher.cache.augment_draws: the training data has no random augmentation"):
        validate_config(plain)


def test_a_method_that_needs_more_than_logits_is_refused(tiny):
    for method in ({"name": "prokt"}, {"name": "dfa"}):
        with pytest.raises(ConfigError, match=f"teacher.cache.enabled: method '{method['name']}' does more"):
            validate_config(tiny_config(method=method, teacher__cache={"enabled": True}))
        config = tiny(method=method)  # auto: simply off
        assert not cache_wanted(config, load_data(config.data))
    ce = tiny(method={"name": "ce"}, teacher__cache={"enabled": True})  # no teacher used: nothing to refuse
    assert not cache_wanted(ce, load_data(ce.data))


def test_cached_views_are_the_views_trained_on(tmp_path):
    root = write_folder(tmp_path / "images", 4)
    config = validate_config(image_config(root, augment_draws=3))
    data = load_data(config.data).to("cpu")
    teacher = build_model(config.teacher.model, data.input_shape, data.num_classes).eval()
    table = np.empty((len(data.train), 3, data.num_classes), dtype="float32")
    _teacher_pass(teacher, data.train, table, 5, torch.device("cpu"))
    data.train.draws = 3
    outputs = TeacherOutputs(table, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    seen = set()
    with torch.no_grad():
        for _ in range(3):
            for batch in data.train.batches(4, shuffle=True, generator=generator):
                torch.testing.assert_close(outputs(batch), teacher(batch.x))
                seen |= set(batch.draw.tolist())
    assert seen == {0, 1, 2}
    assert not np.allclose(table[:, 0], table[:, 1])  # the views differ


def test_a_run_with_drawn_views_never_forwards_the_teacher_in_training(tmp_path, teacher_forwards):
    store = RunStore()
    root = write_folder(tmp_path / "images", 4)
    run(store, validate_config(image_config(root, augment_draws=2)))
    (cache,) = outputs_dir(store).glob("*.npy")
    n_train, _, classes = np.load(cache).shape
    assert np.load(cache).shape == (n_train, 2, 3)
    assert len(teacher_forwards) == 2 * -(-n_train // 256)  # the cache's pass over both views, nothing else


def test_a_large_cache_is_read_from_the_file(monkeypatch, tmp_path):
    table = np.lib.format.open_memmap(tmp_path / "t.npy", mode="w+", dtype="float16", shape=(10, 4))
    table[:] = np.arange(40).reshape(10, 4)
    monkeypatch.setattr("kdlib.teacher_cache.DEVICE_MAX_BYTES", 0)
    outputs = TeacherOutputs(np.load(tmp_path / "t.npy", mmap_mode="r"), torch.device("cpu"))
    assert not outputs.on_device
    from kdlib.data.base import Batch

    rows = outputs(Batch(torch.zeros(2), torch.zeros(2), torch.tensor([7, 2])))
    assert rows.dtype == torch.float32 and rows.tolist() == [[28, 29, 30, 31], [8, 9, 10, 11]]
