"""The loop through the runner, in this process: resume, failure, teachers, per-sample values."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from kdlib.config import ConfigError
from kdlib.data.base import Batch
from kdlib.events import EpochEnded, MemorySink, RunStarted
from kdlib.runner import execute
from kdlib.store import RunStore
from tests.conftest import StopAfter


def test_a_stopped_run_resumes_at_the_next_epoch_with_continuous_metrics(tiny):
    store, config = RunStore(), tiny(epochs=5, method={"name": "ce"})
    run_id = store.create_run(config)
    assert execute(run_id, store, [StopAfter(store, run_id, 1)]) == "stopped"
    assert store.run(run_id)["epoch"] == 1
    events = MemorySink()
    assert execute(run_id, store, [events]) == "done"
    assert events.of(RunStarted)[0].start_epoch == 2
    epochs = store.epoch_metrics(run_id)
    assert list(epochs.index) == [0, 1, 2, 3, 4]
    steps = store.metrics(run_id, scope="step").query("key == 'train.loss'").step
    assert steps.is_monotonic_increasing and steps.is_unique
    assert store.per_sample_epochs(run_id) == [0, 1, 2, 3, 4]

    # the interrupted run ends exactly where an uninterrupted one does
    straight = store.create_run(config)
    execute(straight, store)
    assert np.allclose(store.epoch_metrics(straight)["test.nll"], epochs["test.nll"], atol=1e-6)


def test_a_nan_loss_fails_the_run_with_its_step_and_a_hint(tiny):
    store = RunStore()
    run_id = store.create_run(tiny(method={"name": "ce"}, optimizer={"name": "sgd", "lr": 1e30}))
    assert execute(run_id, store) == "failed"
    error = store.run(run_id)["error"]
    assert "NaN or infinite at step" in error and "lower optimizer.lr" in error


def test_a_failed_run_keeps_what_it_wrote(tiny):
    store = RunStore()
    exploding_lr = {"name": "step", "milestones": [2], "gamma": 1e30}  # fine for two epochs, then NaN
    run_id = store.create_run(
        tiny(method={"name": "ce"}, epochs=4, optimizer={"name": "sgd", "lr": 0.1}, lr_schedule=exploding_lr)
    )
    assert execute(run_id, store) == "failed"
    assert "(epoch 2," in store.run(run_id)["error"]
    assert list(store.epoch_metrics(run_id).index) == [0, 1]
    assert store.per_sample_epochs(run_id) == [0, 1]
    assert (store.run_dir(run_id) / "checkpoint.pt").exists()


def test_a_teacher_is_trained_once_and_reused(tiny):
    store = RunStore()
    first = store.create_run(tiny())
    second = store.create_run(tiny(seed=1, method={"name": "kd", "temperature": 4.0}))
    assert execute(first, store) == "done" and execute(second, store) == "done"
    teachers = store.runs(kind="teacher")
    assert len(teachers) == 1 and teachers.status.iloc[0] == "done"
    (artifact,) = (store.home / "teachers").glob("*/model.pt")
    route = sorted(p.name for p in (artifact.parent / "route").iterdir())
    assert route == ["epoch_0001.pt", "epoch_0002.pt", "epoch_0003.pt"]
    # another teacher recipe is another artifact
    third = store.create_run(tiny(teacher__epochs=2))
    execute(third, store)
    assert len(store.runs(kind="teacher")) == 2


def test_kd_per_sample_values_cover_every_training_sample(tiny):
    store = RunStore()
    run_id = store.create_run(tiny())
    execute(run_id, store)
    arrays = store.per_sample(run_id, 2)
    n = len(arrays["label"])
    for key in ("p_true_student", "p_true_teacher", "loss_per_sample", "kl"):
        assert arrays[key].shape == (n,) and np.isfinite(arrays[key]).all(), key
    for key in ("logit_grad_norm", "logit_grad_ratio", "logit_grad_ratio_true"):
        assert np.isfinite(arrays[key]).all(), key
    test = store.per_sample(run_id, 2, split="test")
    assert set(test) == {"p_true", "predicted", "confidence", "label", "probs", "reliability"}
    n_test = len(test["label"])
    assert test["probs"].shape == (n_test, 2) and test["reliability"].shape == (15, 3)
    assert test["reliability"][:, 0].sum() == n_test
    # the student placed on the teacher's route (saved after epochs 1, 2, 3) on a fixed probe set
    epochs = store.epoch_metrics(run_id)
    assert {"route_kl.0001", "route_kl.0002", "route_kl.0003"} <= set(epochs.columns)
    assert store.per_sample(run_id, 2, split="probe")["probs"].shape == (min(n, 500), 2)  # first training samples
    assert store.trajectory(run_id, "p_true_student", 0).index.tolist() == [0, 1, 2]


def test_a_missing_teacher_checkpoint_is_refused_with_the_field(tiny):
    with pytest.raises(ConfigError, match="teacher.checkpoint: /nonexistent/teacher.pt is neither a weights file"):
        tiny(teacher__checkpoint="/nonexistent/teacher.pt")


def test_a_finished_run_serves_as_a_teacher_by_id(tiny):
    store = RunStore()
    teacher_run = store.create_run(tiny(method={"name": "ce"}, student={"name": "mlp", "hidden": [32, 32]}))
    execute(teacher_run, store)
    student = store.create_run(tiny(teacher__checkpoint=teacher_run))
    assert execute(student, store) == "done"
    assert store.runs(kind="teacher").empty


@pytest.mark.parametrize("split", ["val", "test"])
def test_eval_scalars_are_logged_per_epoch(tiny, split):
    store = RunStore()
    run_id = store.create_run(tiny(method={"name": "ce"}))
    execute(run_id, store)
    frame = store.epoch_metrics(run_id)
    for key in ("acc", "nll", "ece"):
        assert frame[f"{split}.{key}"].notna().all()
    assert frame["lr"].iloc[-1] < frame["lr"].iloc[0]  # cosine decay


def test_a_stop_asked_before_the_run_starts_is_obeyed(tiny):
    store = RunStore()
    run_id = store.create_run(tiny(method={"name": "ce"}, epochs=3))
    store.request(run_id, "stop")
    assert execute(run_id, store) == "stopped"
    assert len(store.epoch_metrics(run_id)) < 3


def test_stopping_a_student_while_its_teacher_trains_stops_both(tiny):
    store = RunStore()
    run_id = store.create_run(tiny())

    class StopOnTeacherEpoch:
        def emit(self, event) -> None:
            if isinstance(event, EpochEnded):
                store.request(run_id, "stop")

        def close(self) -> None:
            pass

    assert execute(run_id, store, [StopOnTeacherEpoch()]) == "stopped"
    assert store.runs(kind="teacher").status.tolist() == ["stopped"]
    assert not list((store.home / "teachers").glob("*/model.pt"))  # no half-trained artifact
    assert execute(run_id, store) == "done"  # resuming trains the teacher, then the student


@pytest.mark.slow
def test_a_compiled_student_trains_and_saves_plain_weights(tiny):
    store = RunStore()
    run_id = store.create_run(tiny(method={"name": "ce"}, teacher=None, epochs=1, compile=True))
    assert execute(run_id, store) == "done", store.run(run_id)["error"]
    weights = torch.load(store.run_dir(run_id) / "model.pt", weights_only=True)
    assert not any(key.startswith("_orig_mod") for key in weights)  # loads into an uncompiled model


def test_channels_last_is_used_for_2d_convolutions_on_cuda_only(tiny):
    from kdlib.trainer import _memory_format
    from kdlib.validation import validate_config

    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
    mlp = torch.nn.Sequential(torch.nn.Linear(2, 2))
    config = tiny()
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert _memory_format(config, cuda, conv) is torch.channels_last
    assert _memory_format(config, cuda, mlp) is torch.contiguous_format
    assert _memory_format(config, cpu, conv) is torch.contiguous_format
    off = validate_config({**config.to_dict(), "channels_last": False})
    assert _memory_format(off, cuda, conv) is torch.contiguous_format
    batch = Batch(torch.randn(2, 3, 5, 5), torch.zeros(2, dtype=torch.long), torch.arange(2))
    assert batch.to("cpu", memory_format=torch.channels_last).x.is_contiguous(memory_format=torch.channels_last)


def test_column_table_gathers_what_was_written_into_its_rows():
    from kdlib.trainer import ColumnTable

    table = ColumnTable(6, torch.device("cpu"))
    weight = torch.ones(2, requires_grad=True)
    table.write(torch.tensor([4, 1]), {"a": weight * 2, "flag": torch.tensor(True)})  # 0-d: every row of the batch
    table.write(torch.tensor([0]), {"a": torch.tensor([5.0], dtype=torch.bfloat16), "late": torch.tensor([7.0])})
    table.write(torch.tensor([1]), {"a": torch.tensor([9.0])})  # written again: the last write wins
    columns = table.columns()
    assert columns["a"].nan_to_num(-1).tolist() == [5.0, 9.0, -1, -1, 2.0, -1]
    assert columns["flag"].nan_to_num(-1).tolist() == [-1, 1.0, -1, -1, 1.0, -1]
    assert columns["late"].nan_to_num(-1).tolist() == [7.0, -1, -1, -1, -1, -1]
    assert columns["a"].dtype == torch.float32 and not columns["a"].requires_grad
    assert table.column("never").isnan().all() and table.column("never").shape == (6,)

    steps = ColumnTable(4, torch.device("cpu"))
    for i in (0, 1, 3):  # rows as numbers; 2 skipped (an empty part of a batch under torchrun)
        steps.write(i, {"loss": torch.tensor(float(i)), "probs": torch.full((3,), float(i))})
    assert steps.column("loss").nan_to_num(-1).tolist() == [0.0, 1.0, -1, 3.0]
    assert steps.column("probs").shape == (4, 3) and steps.column("probs")[3].tolist() == [3.0] * 3


def test_column_table_gathers_early_when_much_is_waiting(monkeypatch):
    from kdlib.trainer import ColumnTable

    monkeypatch.setattr(ColumnTable, "GATHER_ELEMENTS", 10)
    table = ColumnTable(8, torch.device("cpu"))
    table.write(torch.arange(4), {"logits": torch.ones(4, 2)})
    assert table._pending  # 8 values wait
    table.write(torch.arange(4, 8), {"logits": torch.zeros(4, 2)})
    assert not table._pending and table._tables["logits"].sum() == 8  # 16 > 10: gathered


def test_a_checkpoint_is_a_copy_of_the_state_and_a_plain_weights_only_torch_file():
    from kdlib.checkpoints import Checkpointer, load_checkpoint

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    optimizer = torch.optim.Adam(model.parameters(), betas=(0.8, 0.9))
    model(torch.randn(5, 3)).sum().backward()
    optimizer.step()
    state = {"epoch": 3, "student": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": {},
             "distiller": {"buffer": torch.arange(6).reshape(2, 3), "note": ("a", 1.5, None)}}
    before = model[0].weight.detach().clone()
    path = Path(tempfile.mkdtemp()) / "checkpoint.pt"
    saved = []
    checkpointer = Checkpointer(saved.append, before_save=lambda: model[0].weight.data.add_(1.0))
    checkpointer.save(3, state, path)  # training goes on (here: before the write) while it is written
    checkpointer.close()
    assert saved == [3] and not path.with_name("checkpoint.pt.tmp").exists()
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded["student"]["0.weight"], before)  # as it was when asked for
    assert loaded["epoch"] == 3 and loaded["distiller"]["note"] == ("a", 1.5, None)
    assert loaded["optimizer"]["param_groups"][0]["betas"] == (0.8, 0.9)
    torch.optim.Adam(model.parameters()).load_state_dict(load_checkpoint(path)["optimizer"])  # what a resume does


def test_a_packed_checkpoint_of_kdlib_0_1_still_loads():
    from kdlib.checkpoints import load_checkpoint, save_atomic

    weight, steps = torch.arange(6.0).reshape(2, 3), torch.tensor([4.0])
    packed = {"kdlib_packed_state": 1, "buffers": {"float32@cpu": torch.cat([weight.reshape(-1), steps])},
              "state": {"epoch": 2, "student": {"w": ("__kdlib_tensor__", "float32@cpu", 0, (2, 3))},
                        "distiller": {"steps": ("__kdlib_tensor__", "float32@cpu", 6, (1,)), "note": ("a", 1)}}}
    path = Path(tempfile.mkdtemp()) / "checkpoint.pt"
    save_atomic(packed, path)
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 2 and loaded["distiller"]["note"] == ("a", 1)
    assert torch.equal(loaded["student"]["w"], weight) and torch.equal(loaded["distiller"]["steps"], steps)


def test_a_run_that_evaluates_no_split_trains_and_records_its_training_values(tiny):
    store = RunStore()
    run_id = store.create_run(tiny(probes={"eval_splits": [], "log_every": 2}, epochs=2))
    assert execute(run_id, store) == "done", store.run(run_id)["error"]
    assert not any(c.startswith(("val.", "test.")) for c in store.epoch_metrics(run_id).columns)
    assert "p_true_student" in store.per_sample(run_id, 1)


def test_loading_a_route_checkpoint_draws_no_numbers_from_the_runs_generator():
    import torch
    from torch import nn

    from kdlib.trainer import _resolve_teacher

    class Artifact:  # builds its models as a real one does: a fresh init, then the checkpoint's weights
        route_epochs = [1, 2]

        def build(self, data):
            return nn.Linear(2, 3)

        def build_route(self, data, epoch):
            return nn.Linear(2, 3)

    _, route = _resolve_teacher(Artifact(), None, torch.device("cpu"))
    torch.manual_seed(0)
    route.load(1)
    assert torch.equal(torch.random.get_rng_state(), torch.manual_seed(0).get_state())
