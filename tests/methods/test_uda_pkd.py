"""Progressive KD + UDA against METHODS.md section 10: schedules, MMD, KL, the two steps, and the
acceptance rule that target labels never reach a loss."""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdlib.data.base import TensorSplit
from kdlib.methods.base import MethodContext
from kdlib.methods.uda_pkd import (
    UDAPKD,
    Params,
    da_learning_rate,
    gaussian_kernels,
    kl_per_sample,
    mmd2,
    mmd_gamma,
    progressive_beta,
    reverse_kl_per_sample,
)
from kdlib.models import MODELS, build_model
from kdlib.runner import execute
from kdlib.store import RunStore

NUM_CLASSES, DIM = 3, 2


def splits(seed=0, n_source=24, n_target=20):
    g = torch.Generator().manual_seed(seed)
    source = TensorSplit(
        torch.randn(n_source, DIM, generator=g), torch.randint(0, NUM_CLASSES, (n_source,), generator=g)
    )
    target_x = torch.randn(n_target, DIM, generator=g) + 2.0
    target_labels = torch.randint(0, NUM_CLASSES, (n_target,), generator=g)
    return source, target_x, target_labels


def make_distiller(target_y=None, seed=0, **params) -> UDAPKD:
    """MLP teacher and student on 2-D points; the target split's labels are -1 unless `target_y` is given."""
    source, target_x, _ = splits(seed)
    target = TensorSplit(target_x, torch.full((len(target_x),), -1) if target_y is None else target_y)
    torch.manual_seed(seed)
    mlp = MODELS.get("mlp").Params
    student = build_model(mlp(hidden=[8]), (DIM,), NUM_CLASSES)
    teacher = build_model(mlp(hidden=[16, 16]), (DIM,), NUM_CLASSES).eval().requires_grad_(False)  # as the trainer
    context = MethodContext(NUM_CLASSES, len(source), 10, torch.device("cpu"), source)
    context.target_train = target
    params = Params(teacher_lr=0.05, **params)
    return UDAPKD(params, student, teacher, context), source


def train_steps(distiller: UDAPKD, source: TensorSplit, epochs=2, batch_size=8) -> None:
    """What the trainer does: the distiller's forward, then backward and a step of the run's optimizer."""
    optimizer = torch.optim.SGD(
        list(distiller.student.parameters()) + distiller.extra_parameters(), lr=0.1, momentum=0.9
    )
    for epoch in range(epochs):
        torch.manual_seed(1000 + epoch)
        distiller.on_epoch_start(epoch)
        generator = torch.Generator().manual_seed(epoch)
        for batch in source.batches(batch_size, shuffle=True, generator=generator):
            out = distiller.forward(batch)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()


# (1) the progressive KD weight, 1-based epochs, E = 400
def test_beta_schedule_matches_hand_values():
    values = [progressive_beta(e, 400, 0.1, 0.9) for e in (1, 2, 200, 400)]
    assert values == pytest.approx([0.1, 0.100551, 0.298357, 0.895070], abs=1e-6)
    distiller, _ = make_distiller()
    distiller.context.total_epochs = 400
    distiller.on_epoch_start(199)  # the trainer's 0-based epoch 199 is the paper's e = 200
    assert distiller.coefficients()["beta"] == pytest.approx(0.298357, abs=1e-6)


# (2) the MMD ramp within an epoch
def test_gamma_ramp_values_and_restart_each_epoch():
    assert mmd_gamma(0, 30) == 0.0
    assert mmd_gamma(30, 30) == pytest.approx(0.999909, abs=1e-6)
    assert mmd_gamma(15, 30) == pytest.approx(2 / (1 + math.exp(-5)) - 1, abs=1e-12)
    distiller, source = make_distiller()
    train_steps(distiller, source, epochs=1, batch_size=8)  # 3 steps: B = 3
    assert distiller.coefficients()["gamma"] == pytest.approx(mmd_gamma(3, 3))
    distiller.on_epoch_start(1)
    distiller.forward(next(source.batches(8)))
    assert distiller.gamma == pytest.approx(mmd_gamma(1, 3))  # restarted, not global progress


def test_da_learning_rate_is_the_official_annealing():
    assert da_learning_rate(0.001, 1, 400) == 0.001
    assert da_learning_rate(0.001, 401, 400) == pytest.approx(0.001 / (1 + 10 * 400 / 401) ** 0.75)


# (3) MMD^2
def test_mmd_of_a_set_with_itself_is_zero():
    x = torch.randn(16, 5, generator=torch.Generator().manual_seed(0))
    assert mmd2(x, x).item() == pytest.approx(0.0, abs=1e-6)


def test_mmd_matches_hand_computation_for_two_points():
    # stacked [0; 1]: b = (1 + 1) / (4 - 2) = 1, bandwidths 1/4 .. 4; K_ss = K_tt = 5 (one kernel of 1 each)
    cross = sum(math.exp(-1 / (2.0 ** (j - 2))) for j in range(5))
    assert cross == pytest.approx(1.906862, abs=1e-6)
    assert mmd2(torch.tensor([[0.0]]), torch.tensor([[1.0]])).item() == pytest.approx(10 - 2 * cross, abs=1e-5)


def test_mmd_equals_the_official_mean_of_xx_yy_xy_yx():
    g = torch.Generator().manual_seed(1)
    source, target = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g) + 0.5
    kernels = gaussian_kernels(source, target)
    official = (kernels[:8, :8] + kernels[8:, 8:] - kernels[:8, 8:] - kernels[8:, :8]).mean()
    assert mmd2(source, target).item() == pytest.approx(official.item(), abs=1e-6)


def test_mmd_of_separated_gaussians_is_positive_and_shrinks_with_overlap():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(64, 2, generator=g), torch.randn(64, 2, generator=g)
    values = [mmd2(a, b + torch.tensor([d, 0.0])).item() for d in (6.0, 3.0, 1.0, 0.0)]
    assert values[0] > 5  # near the maximum of 10 (2 x 5 kernels) for far-apart sets
    assert values == sorted(values, reverse=True)
    assert values[-1] < values[0] / 20  # same distribution: only the biased estimate's small-sample term


def test_bandwidth_carries_no_gradient():
    x = torch.randn(4, 3, requires_grad=True)
    y = torch.randn(4, 3)
    (grad,) = torch.autograd.grad(mmd2(x, y), x)
    # with the bandwidth detached, the gradient is that of a fixed-bandwidth MMD
    total = torch.cat([x.detach(), y])
    b = torch.cdist(total, total).square().sum() / (8 * 8 - 8)
    x2 = x.detach().clone().requires_grad_()
    stacked = torch.cat([x2, y])
    d = torch.cdist(stacked, stacked).square()
    k = sum(torch.exp(-d / (b * 2.0 ** (j - 2))) for j in range(5))
    fixed = k[:4, :4].mean() + k[4:, 4:].mean() - 2 * k[:4, 4:].mean()
    (expected,) = torch.autograd.grad(fixed, x2)
    assert torch.allclose(grad, expected, atol=1e-6)


# (4) the reverse KL of the official code
def test_reverse_kl_matches_hand_computation_and_official_expression():
    student, teacher = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[3.0, 2.0, 1.0]])
    p_s, p_t = F.softmax(student, 1), F.softmax(teacher, 1)
    by_hand = (p_s * (p_s.log() - p_t.log())).sum()
    assert reverse_kl_per_sample(student, teacher, 1.0).item() == pytest.approx(by_hand.item(), abs=1e-6)
    assert by_hand.item() == pytest.approx(1.150420, abs=1e-6)  # log p_s - log p_t = z_s - z_t = [-2, 0, 2]
    batch_s, batch_t = torch.randn(5, 4), torch.randn(5, 4)
    # KD_UDA base_kd.py: kl_div(log_softmax(z_t / T), softmax(z_s / T), sum) / N
    official = F.kl_div(F.log_softmax(batch_t / 4, 1), F.softmax(batch_s / 4, 1), reduction="sum") / 5
    assert reverse_kl_per_sample(batch_s, batch_t, 4.0).mean().item() == pytest.approx(official.item(), abs=1e-6)
    assert kl_per_sample(batch_t, batch_s, 4.0).mean().item() != pytest.approx(official.item(), abs=1e-3)


def test_kd_loss_is_beta_times_source_and_target_terms():
    distiller, source = make_distiller(temperature=4.0, alpha=0.3)
    distiller.on_epoch_start(0)
    batch = next(source.batches(8))
    x_target = distiller.target.x[:8]
    teacher_copy = copy.deepcopy(distiller.teacher)
    out = distiller.distill(batch, x_target, 0.25, {})
    s_src, s_tgt = distiller.student(batch.x), distiller.student(x_target)
    t_src, t_tgt = teacher_copy(batch.x), teacher_copy(x_target)
    source_term = 0.3 * 16 * reverse_kl_per_sample(s_src, t_src, 4.0) + 0.7 * F.cross_entropy(
        s_src, batch.y, reduction="none"
    )
    expected = 0.25 * (source_term.mean() + 16 * reverse_kl_per_sample(s_tgt, t_tgt, 4.0).mean())
    assert out.loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert torch.allclose(out.per_sample["loss_per_sample"], 0.25 * source_term.detach(), atol=1e-6)
    assert set(out.per_sample) == {"p_true_student", "p_true_teacher", "kl", "loss_per_sample"}
    assert all(v.shape == (8,) and not v.requires_grad for v in out.per_sample.values())


# (5) the two forms of the KD step
def test_frozen_teacher_gets_no_gradient_from_the_kd_step():
    distiller, source = make_distiller(teacher_frozen_in_kd=True)
    distiller.on_epoch_start(0)
    out = distiller.forward(next(source.batches(8)))
    out.loss.backward()
    assert all(p.grad is None for p in distiller.teacher.parameters())
    assert distiller.extra_parameters() == []


def test_official_form_kd_step_trains_the_teacher_too():
    distiller, source = make_distiller()
    distiller.on_epoch_start(0)
    out = distiller.forward(next(source.batches(8)))
    assert all(p.grad is None for p in distiller.teacher.parameters())  # step A leaves no gradient behind
    out.loss.backward()
    assert all(p.grad is not None for p in distiller.teacher.parameters())
    assert len(distiller.extra_parameters()) == len(list(distiller.teacher.parameters()))


def test_teacher_kd_grad_scale_scales_the_teachers_kd_gradient():
    grads = []
    for scale in (1.0, 0.1):
        distiller, source = make_distiller(teacher_kd_grad_scale=scale)
        distiller.on_epoch_start(0)
        distiller.forward(next(source.batches(8))).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in distiller.teacher.parameters()]))
    assert torch.allclose(grads[1], 0.1 * grads[0], atol=1e-7)


def test_step_a_moves_the_teacher_only():
    distiller, source = make_distiller()
    distiller.on_epoch_start(0)
    student_before = copy.deepcopy(distiller.student.state_dict())
    teacher_before = copy.deepcopy(distiller.teacher.state_dict())
    terms = distiller.adapt_teacher(next(source.batches(8)), distiller.target.x[:8], 0.1, 0.5)
    assert all(torch.equal(v, distiller.student.state_dict()[k]) for k, v in student_before.items())
    assert all(p.grad is None for p in distiller.student.parameters())
    assert any(not torch.equal(v, distiller.teacher.state_dict()[k]) for k, v in teacher_before.items())
    expected = 0.9 * (terms["loss_ce_teacher"] + 0.5 * terms["mmd2"])
    assert terms["loss_da"].item() == pytest.approx(expected.item(), abs=1e-6)


# acceptance: target labels never reach a loss
def test_target_labels_of_minus_one_would_fail_any_loss():
    with pytest.raises((IndexError, RuntimeError)):
        F.cross_entropy(torch.randn(2, 3), torch.tensor([-1, -1]))
    distiller, source = make_distiller()  # target labels are all -1: a loss that read them would raise
    assert (distiller.target.y == -1).all()
    train_steps(distiller, source, epochs=2)
    assert np.isfinite(distiller.coefficients()["mmd2"])


def test_training_is_identical_whatever_the_hidden_target_labels():
    _, _, true_labels = splits()
    results = []
    for target_y in (None, true_labels, (true_labels + 1) % NUM_CLASSES):
        distiller, source = make_distiller(target_y=target_y)
        train_steps(distiller, source, epochs=2)
        results.append([*distiller.student.state_dict().values(), *distiller.teacher.state_dict().values()])
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other, strict=True))


def test_state_dict_round_trips_through_weights_only_load():
    distiller, source = make_distiller()
    train_steps(distiller, source, epochs=1)
    buffer = io.BytesIO()
    torch.save(distiller.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh, _ = make_distiller(seed=5)
    fresh.load_state_dict(state)
    for key, value in distiller.teacher.state_dict().items():
        assert torch.equal(fresh.teacher.state_dict()[key], value)
    assert fresh.steps_per_epoch == distiller.steps_per_epoch == 3


def test_epoch_arrays_cover_the_target_probe():
    distiller, source = make_distiller(target_probe_size=15)
    train_steps(distiller, source, epochs=1)
    arrays = distiller.epoch_arrays()
    assert set(arrays) == {
        f"target.{k}" for k in ("confidence_student", "confidence_teacher", "pred_student", "pred_teacher", "kl")
    }
    assert all(v.shape == (15,) and np.isfinite(v).all() for v in arrays.values())
    assert (arrays["target.kl"] >= -1e-6).all() and (arrays["target.confidence_student"] >= 1 / NUM_CLASSES).all()
    assert distiller.student.training and distiller.teacher.training  # modes restored


def test_without_a_target_split_the_source_stands_in_with_a_warning():
    source, _, _ = splits()
    mlp = MODELS.get("mlp").Params
    context = MethodContext(NUM_CLASSES, len(source), 3, torch.device("cpu"), source)
    with pytest.warns(UserWarning, match="domain_pair"):
        distiller = UDAPKD(Params(), build_model(mlp(), (DIM,), 3), build_model(mlp(), (DIM,), 3), context)
    assert torch.equal(distiller.target.x, source.x) and (distiller.target.y == -1).all()


def test_end_to_end_on_toy2d_shift(tiny):
    store = RunStore()
    config = tiny(
        data={
            "name": "domain_pair",
            "preset": "toy2d_shift",
            "source": {"n_samples": 300},
            "target": {"n_samples": 300},
        },
        method={"name": "uda_pkd", "teacher_lr": 0.05, "target_probe_size": 50},
        optimizer={"name": "sgd", "lr": 0.1},
    )
    run_id = store.create_run(config)
    assert execute(run_id, store) == "done", store.run(run_id)["error"]
    epochs = store.epoch_metrics(run_id)
    assert list(epochs["beta"]) == pytest.approx([progressive_beta(e, 3, 0.1, 0.9) for e in (1, 2, 3)])
    assert list(epochs["gamma"]) == pytest.approx([mmd_gamma(7, 7)] * 3)  # 210 source samples / 32 = 7 steps
    assert np.isfinite(epochs["mmd2"]).all() and (epochs["mmd2"] > 0).all()
    assert {"train.loss_da", "train.mmd2", "train.loss_kd_target", "test.acc", "val.acc"} <= set(epochs.columns)
    train = store.per_sample(run_id, 2)
    assert len(train["label"]) == 210 and np.isfinite(train["p_true_teacher"].astype(float)).all()
    target = store.per_sample(run_id, 2, split="target")
    assert target["confidence_student"].shape == (50,) and target["kl"].shape == (50,)
    test = store.per_sample(run_id, 2, split="test")
    assert len(test["label"]) == 60 and set(np.unique(test["label"])) <= {0, 1}  # the target's test labels


def test_both_steps_run_under_autocast():
    distiller, source = make_distiller()
    distiller.on_epoch_start(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = distiller.forward(next(source.batches(8)))
    out.loss.backward()
    assert torch.isfinite(out.loss) and not distiller.scaler.is_enabled()  # bf16 needs no loss scaling
    assert all(torch.isfinite(p.grad).all() for p in distiller.student.parameters())
