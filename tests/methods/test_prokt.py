"""ProKT against METHODS.md section 7 and the official code (`wxsh1213/prokt_text` at 3d9b077): the teacher's
loss by hand and transcribed, the constraint's effect, eval-mode views, gradient hygiene, resume."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdlib.data.base import Batch, TensorSplit
from kdlib.methods.base import MethodContext, TeacherRoute
from kdlib.config import ConfigError
from kdlib.methods.prokt import Params, ProKT, ideal_local_target, teacher_loss, teacher_loss_terms
from kdlib.validation import validate_config
from kdlib.runner import execute
from kdlib.store import RunStore
from tests.conftest import StopAfter, tiny_config


def make_distiller(seed=0, same_start=False, train=None, **params) -> tuple[ProKT, Batch]:
    """A linear student and teacher on a fixed batch of 32 four-dimensional samples, 3 classes."""
    torch.manual_seed(seed)
    student = nn.Linear(4, 3)
    teacher = copy.deepcopy(student) if same_start else nn.Linear(4, 3)
    params = {"teacher_optimizer": "sgd", "teacher_lr": 0.05, **params}
    context = MethodContext(3, 32, 1, torch.device("cpu"), train)
    distiller = ProKT(Params(**params), student, teacher.requires_grad_(False).eval(), context)
    distiller.on_epoch_start(0)
    generator = torch.Generator().manual_seed(seed)
    x, y = torch.randn(32, 4, generator=generator), torch.randint(0, 3, (32,), generator=generator)
    return distiller, Batch(x, y, torch.arange(32))


def test_teacher_loss_matches_hand_computation():
    teacher, student, label = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([0])
    # CE = log(1 + e^-2 + e^-3) = 0.169846; KL(p_s || p_t) = 0.982577, the student's distribution first
    ce, kl = teacher_loss_terms(teacher, student, label)
    assert ce.item() == pytest.approx(0.169846, abs=1e-6) and kl.item() == pytest.approx(0.982577, abs=1e-6)
    assert teacher_loss(teacher, student, label, 0.4).item() == pytest.approx(0.494938, abs=1e-6)
    assert teacher_loss(teacher, student, label, 1.0).item() == pytest.approx(0.982577, abs=1e-6)
    assert teacher_loss(teacher, student, label, 0.0).item() == pytest.approx(0.169846, abs=1e-6)


def official_teacher_loss(teacher_logits, student_logits, labels, move_back_weight):
    """Transcribed from prokt_text: `modeling_bert.py` BertForSequenceClassification.forward with
    labels = (soft_labels, hard_labels), then `run_glue_milestone.py` KDCriterion.forward."""
    soft_labels = F.log_softmax(student_logits, dim=-1, dtype=torch.float32)
    log_prob = F.log_softmax(teacher_logits, dim=-1, dtype=torch.float32)
    kld_loss = -torch.exp(soft_labels) * log_prob + torch.exp(soft_labels) * soft_labels
    kld_loss = torch.mean(torch.sum(kld_loss, dim=-1))
    ce_loss = nn.CrossEntropyLoss()(teacher_logits.view(-1, teacher_logits.shape[1]), labels.view(-1))
    return (1 - move_back_weight) * ce_loss + move_back_weight * kld_loss


@pytest.mark.parametrize("weight", [0.0, 0.3, 0.4, 1.0])
def test_teacher_loss_is_the_official_criterion(weight):
    generator = torch.Generator().manual_seed(0)
    teacher, student = torch.randn(16, 5, generator=generator) * 3, torch.randn(16, 5, generator=generator) * 3
    labels = torch.randint(0, 5, (16,), generator=generator)
    assert teacher_loss(teacher, student, labels, weight).item() == pytest.approx(
        official_teacher_loss(teacher, student, labels, weight).item(), abs=1e-6
    )


def test_teacher_loss_never_reaches_the_student():
    student = torch.tensor([[3.0, 2.0, 1.0]], requires_grad=True)
    teacher = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    teacher_loss(teacher, student, torch.tensor([2]), 0.5).backward()
    assert student.grad is None and teacher.grad is not None


def test_lambda_from_an_old_config_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match=r"lambda_ was replaced by move_back_weight.*0\.4.*lambda / \(1 \+ lambda\)"):
        validate_config(tiny_config(method={"name": "prokt", "lambda_": 1.0}))
    with pytest.raises(ConfigError, match="move_back_weight"):
        validate_config(tiny_config(method={"name": "prokt", "move_back_weight": 1.5}))


def test_ideal_local_target_is_one_mirror_descent_step():
    p = torch.tensor([[0.5, 0.3, 0.2]])
    q = ideal_local_target(p, torch.tensor([0]), eta=0.1)
    # [0.5 e^{0.1/0.5}, 0.3, 0.2] normalized
    assert torch.allclose(q, torch.tensor([[0.549834, 0.270100, 0.180066]]), atol=1e-5)
    assert q.sum().item() == pytest.approx(1.0, abs=1e-6)
    ratio = q / p
    assert torch.allclose(ratio[0, 1], ratio[0, 2]) and ratio[0, 0] > ratio[0, 1]  # only the true class moves
    assert torch.allclose(ideal_local_target(p, torch.tensor([0]), eta=1e-7), p, atol=1e-6)


def test_a_large_weight_keeps_the_teacher_at_the_student():
    """Test (1): from teacher = student, 50 teacher steps with the student held still."""
    gaps = {}
    for weight in (0.0, 0.9):
        distiller, batch = make_distiller(same_start=True, move_back_weight=weight)
        for _ in range(50):
            out = distiller.forward(batch)
        gaps[weight] = out.per_sample["kl_ts_after"].mean().item()
    assert gaps[0.9] < 0.01 < 0.1 < gaps[0.0]  # measured: 0.0042 and 0.30


@pytest.mark.parametrize("seed", range(5))
def test_one_teacher_update_decreases_its_kl_to_the_student(seed):
    """The acceptance point: on a fixed batch, KL(teacher || student) after the teacher's step is smaller.

    With w = 0.9 the constraint dominates the teacher's CE; at w = 0.5 it held on 49 of 50 seeds.
    """
    distiller, batch = make_distiller(seed, move_back_weight=0.9, teacher_lr=0.1)
    out = distiller.forward(batch)
    assert out.per_sample["kl_ts_after"].mean() < out.per_sample["kl_ts"].mean()
    with torch.no_grad():  # and kl_ts_after is the KL of the moved teacher, measured independently
        log_t, log_s = F.log_softmax(distiller.teacher(batch.x), 1), F.log_softmax(distiller.student(batch.x), 1)
    assert torch.allclose(out.per_sample["kl_ts_after"], (log_t.exp() * (log_t - log_s)).sum(1), atol=1e-6)


def test_the_models_see_each_other_in_eval_mode():
    """As the official `Trainer.output`: the teacher's step sees the student's eval-mode logits, the student's
    step the moved teacher's; each model trains (and is left) in train mode."""
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5))
    teacher = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5))
    context = MethodContext(3, 32, 1, torch.device("cpu"))
    distiller = ProKT(Params(teacher_optimizer="sgd", teacher_lr=0.05), student, teacher.eval(), context)
    distiller.on_epoch_start(0)
    batch = Batch(torch.randn(32, 4), torch.randint(0, 3, (32,)), torch.arange(32))
    out = distiller.forward(batch)
    assert student.training and teacher.training
    with torch.no_grad():
        view, moved = student[0](batch.x), teacher[0](batch.x)  # the Linear alone is the eval-mode output
    log_s, log_t = F.log_softmax(view, 1), F.log_softmax(moved, 1)
    assert torch.allclose(out.per_sample["kl_ts_after"], (log_t.exp() * (log_t - log_s)).sum(1), atol=1e-6)
    assert torch.allclose(out.per_sample["p_true_teacher"], log_t.exp().gather(1, batch.y[:, None])[:, 0], atol=1e-6)
    assert not torch.allclose(out.logits, view)  # the student's own step runs with dropout


def test_gradients_stay_on_their_side():
    """Test (3): L_T's backward leaves the student without gradient; L_S's leaves the teacher without."""
    distiller, batch = make_distiller()
    teacher_before = copy.deepcopy(distiller.teacher.state_dict())
    out = distiller.forward(batch)  # the teacher's step has run inside
    assert all(p.grad is None for p in distiller.student.parameters())
    assert any(not torch.equal(teacher_before[k], v) for k, v in distiller.teacher.state_dict().items())
    out.loss.backward()
    assert all(p.grad is None for p in distiller.teacher.parameters())
    assert all(p.grad is not None for p in distiller.student.parameters())


def test_weight_zero_makes_the_teacher_step_plain_cross_entropy():
    """Test (2): w = 0 is online KD: the teacher's update is a CE step, blind to the student."""
    distiller, batch = make_distiller(move_back_weight=0.0, w_ce=0.3)
    reference = copy.deepcopy(distiller.teacher).requires_grad_(True)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9)
    F.cross_entropy(reference(batch.x), batch.y).backward()
    optimizer.step()
    out = distiller.forward(batch)
    for moved, expected in zip(distiller.teacher.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(moved, expected, atol=1e-6)
    # The student's loss is KD with the moved teacher: w_kd T^2 KL + w_ce CE, T = 1
    with torch.no_grad():
        student, target = distiller.student(batch.x), reference(batch.x)
    kl = (F.softmax(target, 1) * (F.log_softmax(target, 1) - F.log_softmax(student, 1))).sum(1)
    assert out.loss.item() == pytest.approx(
        (kl + 0.3 * F.cross_entropy(student, batch.y, reduction="none")).mean().item(), abs=1e-5
    )


def test_state_survives_a_weights_only_checkpoint():
    distiller, batch = make_distiller(teacher_optimizer="adam", teacher_lr=0.01)
    distiller.forward(batch)
    buffer = io.BytesIO()
    torch.save(distiller.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    resumed, _ = make_distiller(teacher_optimizer="adam", teacher_lr=0.01)
    resumed.student.load_state_dict(distiller.student.state_dict())
    resumed.load_state_dict(state)
    assert resumed.teacher_optimizer.state_dict()["state"][0]["step"].item() == 1
    a, b = distiller.forward(batch), resumed.forward(batch)  # Adam's moments came back too
    assert torch.equal(a.per_sample["kl_ts_after"], b.per_sample["kl_ts_after"])


def test_scratch_restarts_the_teacher_from_its_route_start_or_a_fresh_init():
    torch.manual_seed(1)
    init = nn.Linear(4, 3)
    route = TeacherRoute([0, 5], lambda epoch: copy.deepcopy(init))
    trained = nn.Linear(4, 3)
    context = MethodContext(3, 32, 1, torch.device("cpu"), route=route)
    distiller = ProKT(Params(teacher_init="scratch"), nn.Linear(4, 3), copy.deepcopy(trained), context)
    assert torch.equal(distiller.teacher.weight, init.weight)
    context.route = None
    fresh = ProKT(Params(teacher_init="scratch"), nn.Linear(4, 3), copy.deepcopy(trained), context)
    assert not torch.equal(fresh.teacher.weight, trained.weight) and fresh.teacher.weight.requires_grad


def test_probe_arrays_follow_the_moving_teacher():
    train = TensorSplit(torch.randn(40, 4), torch.randint(0, 3, (40,)))
    distiller, batch = make_distiller(train=train, probe_size=25, move_back_weight=0.0, teacher_lr=0.5)
    first = distiller.epoch_arrays()
    assert first["probe.teacher_probs"].shape == first["probe.student_probs"].shape == (25, 3)
    distiller.forward(batch)
    assert not np.allclose(distiller.epoch_arrays()["probe.teacher_probs"], first["probe.teacher_probs"])
    assert distiller.teacher.training  # the probe runs in eval mode and gives the mode back


def test_prokt_through_the_trainer(tiny):
    store = RunStore()
    run_id = store.create_run(tiny(method={"name": "prokt", "teacher_lr": 0.01}, epochs=3))
    assert execute(run_id, store) == "done", store.run(run_id)["error"]
    epochs = store.epoch_metrics(run_id)
    for key in ("train.kl_ts", "train.loss_teacher_ce", "train.loss_teacher_kl", "teacher_lr", "move_back_weight"):
        assert np.isfinite(epochs[key]).all(), key
    arrays = store.per_sample(run_id, 2)
    for key in ("kl_ts", "kl_ts_after", "p_true_teacher", "p_true_student", "loss_per_sample"):
        assert np.isfinite(arrays[key]).all(), key
    probes = [store.per_sample(run_id, e, split="probe") for e in range(3)]
    n_train = len(arrays["label"])
    assert probes[0]["teacher_probs"].shape == (n_train, 2)  # toy2d's 280 training samples, under probe_size
    assert not np.allclose(probes[0]["teacher_probs"], probes[2]["teacher_probs"])  # the teacher moved
    assert probes[2]["probs"].shape[1] == 2  # the trainer's own route probe (test samples) is still there


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tiny):
    """The checkpoint carries the moving teacher and its optimizer (Adam's moments) through a stop."""
    store, config = RunStore(), tiny(method={"name": "prokt", "teacher_lr": 0.01})
    straight = store.create_run(config)
    execute(straight, store)  # first, so that the teacher artifact exists and the stop reaches the student
    run_id = store.create_run(config)
    assert execute(run_id, store, [StopAfter(store, run_id, 0)]) == "stopped"
    assert len(store.epoch_metrics(run_id)) == 1
    assert execute(run_id, store) == "done"
    resumed, plain = store.epoch_metrics(run_id), store.epoch_metrics(straight)
    assert np.allclose(resumed["test.nll"], plain["test.nll"], atol=1e-6)
    assert np.allclose(resumed["train.kl_ts"], plain["train.kl_ts"], atol=1e-6)


def test_a_stored_run_with_the_old_lambda_still_opens_and_a_new_config_is_refused(tiny):
    import pytest

    from kdlib.config import ConfigError
    from kdlib.store import RunStore
    from kdlib.validation import validate_config

    config = tiny(method={"name": "prokt"})
    old = config.to_dict()
    old["method"] = {k: v for k, v in old["method"].items() if k != "move_back_weight"} | {"lambda_": 1.0}
    with pytest.raises(ConfigError, match="lambda_ was replaced by move_back_weight"):
        validate_config(old)
    store = RunStore()
    run_id = store.create_run(config)
    with store._connect() as db:  # as kdlib 0.2 stored it
        db.execute("UPDATE runs SET config = ? WHERE id = ?", (__import__("yaml").safe_dump(old), run_id))
    assert store.config(run_id).method.move_back_weight.value == 0.5
