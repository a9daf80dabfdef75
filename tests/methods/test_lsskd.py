"""LSSKD against METHODS.md section 9: transforms and joint labels by hand, the layered loss, the plain saved student."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdlib.data.base import Batch, TensorSplit
from kdlib.methods.base import MethodContext
from kdlib.methods.lsskd import (
    LSSKD,
    Params,
    class_logits,
    joint_labels,
    layered_kl_per_row,
    lsskd_step_output,
    pick_transform,
    stack_copies,
    transform4,
    transform_correct,
)
from kdlib.models import FeatureTaps, build_model
from kdlib.models.simple import CNN1DParams, CNN2DParams, MLPParams
from kdlib.runner import execute
from kdlib.store import RunStore
from kdlib.trainer import load_checkpoint
from tests.conftest import StopAfter


def make_distiller(model_params, sample_shape, num_classes=3, n=12, **params) -> tuple[LSSKD, Batch]:
    torch.manual_seed(0)
    student = build_model(model_params, sample_shape, num_classes)
    x, y = torch.randn(n, *sample_shape), torch.randint(0, num_classes, (n,))
    context = MethodContext(num_classes, n, 1, torch.device("cpu"), TensorSplit(x, y))
    distiller = LSSKD(Params(**params), student, None, context)
    distiller.on_epoch_start(0)
    return distiller, Batch(x, y, torch.arange(n))


def test_rot90_of_a_2x2_image_and_the_joint_labels():
    """Test (1): copy k of sample i is row 4i + k, with the joint label 4y + k."""
    image = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    assert torch.equal(transform4(image, 1, "rot90"), torch.tensor([[[[2.0, 4.0], [1.0, 3.0]]]]))
    assert torch.equal(transform4(image, 2, "rot90"), torch.tensor([[[[4.0, 3.0], [2.0, 1.0]]]]))
    two = torch.cat([image, 10 * image])
    stacked = stack_copies(two, "rot90")
    assert stacked.shape == (8, 1, 2, 2)
    assert torch.equal(stacked[5], transform4(10 * image, 1, "rot90")[0])
    assert joint_labels(torch.tensor([2, 0])).tolist() == [8, 9, 10, 11, 0, 1, 2, 3]


def test_the_transforms_for_signals_points_and_non_square_images():
    signal = torch.tensor([[1.0, 2.0, 3.0]])
    assert [transform4(signal, k, "signal").tolist() for k in range(4)] == [
        [[1.0, 2.0, 3.0]],
        [[3.0, 2.0, 1.0]],
        [[-1.0, -2.0, -3.0]],
        [[-3.0, -2.0, -1.0]],
    ]
    point = torch.tensor([[1.0, 0.0]])
    assert [transform4(point, k, "plane").tolist() for k in range(4)] == [
        [[1.0, 0.0]],
        [[0.0, 1.0]],
        [[-1.0, 0.0]],
        [[0.0, -1.0]],
    ]
    image = torch.arange(6.0).view(1, 1, 2, 3)
    assert torch.equal(transform4(image, 1, "flips"), image.flip(-1))
    assert torch.equal(transform4(image, 3, "flips"), torch.rot90(image, 2, (-2, -1)))
    assert [pick_transform(s) for s in [(3, 32, 32), (1, 8, 12), (40,), (2, 40), (2,)]] == [
        "rot90",
        "flips",
        "signal",
        "signal",
        "plane",
    ]
    with pytest.raises(ValueError, match="no 4-way transform"):
        pick_transform((1, 2, 3, 4))


@pytest.mark.parametrize("kind", ["rot90", "flips", "signal", "plane"])
def test_every_fourth_row_is_the_unrotated_sample(kind):
    """Test (2): z[0::4] selects exactly the unrotated copies."""
    x = (
        torch.randn(5, 2)
        if kind == "plane"
        else torch.randn(5, 1, 4, 4)
        if kind in ("rot90", "flips")
        else torch.randn(5, 7)
    )
    copies = stack_copies(x, kind)
    assert torch.equal(copies[0::4], x)
    assert all(not torch.equal(copies[k::4], x) for k in (1, 2, 3))


def test_class_logits_and_transform_accuracy_by_hand():
    joint = torch.arange(8.0)[None]  # K = 2: class 0 has joint logits 0..3, class 1 has 4..7
    assert class_logits(joint).tolist() == [[6.0, 22.0]]
    # four rows of one sample; the transform is read from logsumexp over classes
    rows = torch.zeros(4, 8)
    rows[0, 4], rows[1, 1], rows[2, 3], rows[3, 7] = 5.0, 5.0, 5.0, 5.0  # predicts k = 0, 1, 3, 3
    assert transform_correct(rows).tolist() == [1.0, 1.0, 0.0, 1.0]


def test_layered_kl_matches_hand_computation_and_points_deep_to_shallow():
    shallow, deep = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[3.0, 2.0, 1.0]])
    # METHODS.md 2.3 test (1): T^2 KL(softmax(deep/4) || softmax(shallow/4)) = 1.319630
    (kl,) = layered_kl_per_row([shallow, deep], temperature=4.0)
    assert kl.item() == pytest.approx(1.319630, abs=1e-6)
    assert layered_kl_per_row([shallow], 4.0) == []  # one head: nothing to distil


def test_the_loss_is_the_sum_of_its_terms():
    torch.manual_seed(0)
    labels, final = torch.tensor([1, 0]), torch.randn(2, 2)
    heads = [torch.randn(8, 8) for _ in range(3)]
    features = [torch.randn(8, 5) for _ in range(3)]
    out = lsskd_step_output(labels, final, heads, features, 3.0, w_aux=0.5, w_kl=2.0, w_align=0.1)
    joint = torch.tensor([4, 5, 6, 7, 0, 1, 2, 3])
    kl = sum(
        F.kl_div(F.log_softmax(a / 3, 1), F.softmax(b / 3, 1), reduction="batchmean") * 9
        for a, b in zip(heads[:-1], heads[1:], strict=True)
    )
    align = sum(F.mse_loss(a, b) for a, b in zip(features[:-1], features[1:], strict=True))
    expected = (
        F.cross_entropy(final, labels) + 0.5 * sum(F.cross_entropy(a, joint) for a in heads) + 2.0 * kl + 0.1 * align
    )
    assert out.loss.item() == pytest.approx(expected.item(), abs=1e-5)
    assert out.per_sample["loss_per_sample"].mean().item() == pytest.approx(expected.item(), abs=1e-5)
    assert set(out.per_sample) >= {"p_true_head1", "p_true_head3", "rot_acc_head2", "kl_head1", "kl_head2"}
    assert "kl_head3" not in out.per_sample and out.per_sample["rot_acc_head1"].shape == (2,)


def test_the_deeper_head_is_detached_in_every_kl_term():
    """Test (4): the KL terms alone give head a_L's parameters no gradient."""
    distiller, batch = make_distiller(MLPParams(hidden=[8, 8, 8]), (2,))
    copies = stack_copies(batch.x, distiller.kind)
    with FeatureTaps(distiller.student, distiller.taps) as taps:
        distiller.student(copies)
    logits = [head(taps.features[n])[1] for head, n in zip(distiller.heads, distiller.taps, strict=True)]
    sum(kl.mean() for kl in layered_kl_per_row(logits, 3.0)).backward()
    assert all(p.grad is None for p in distiller.heads[-1].parameters())
    assert all(p.grad is not None for p in distiller.heads[0].parameters())


@pytest.mark.parametrize(
    ("model", "shape", "tap_count"),
    [
        (CNN2DParams(channels=[4, 8]), (1, 8, 8), 2),
        (CNN1DParams(channels=[4, 4, 4]), (20,), 3),
        (MLPParams(hidden=[]), (2,), 1),
    ],
)
def test_heads_fit_images_signals_and_plain_vectors(model, shape, tap_count):
    distiller, batch = make_distiller(model, shape)
    assert len(distiller.heads) == tap_count
    out = distiller.forward(batch)
    out.loss.backward()
    assert all(p.grad is not None for p in distiller.extra_parameters())
    assert all(v.shape == (len(batch),) for v in out.per_sample.values())


def test_heads_survive_a_weights_only_checkpoint():
    distiller, _ = make_distiller(MLPParams(hidden=[8, 8]), (2,))
    buffer = io.BytesIO()
    torch.save(distiller.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(5)
    other, _ = make_distiller(MLPParams(hidden=[8, 8]), (2,))
    for p in other.heads.parameters():
        p.data.normal_()
    other.load_state_dict(torch.load(buffer, weights_only=True))
    assert all(torch.equal(a, b) for a, b in zip(other.heads.parameters(), distiller.heads.parameters(), strict=True))


def test_the_saved_student_is_the_plain_architecture(tiny):
    """Test (3) and the acceptance point: model.pt loads strictly into the plain model, same parameter count."""
    store = RunStore()
    config = tiny(method={"name": "lsskd"}, student={"name": "mlp", "hidden": [16, 16]}, epochs=2)
    run_id = store.create_run(config)
    assert execute(run_id, store) == "done", store.run(run_id)["error"]
    saved = torch.load(store.run_dir(run_id) / "model.pt", weights_only=True)
    plain = build_model(config.student, (2,), 2)
    plain.load_state_dict(saved, strict=True)
    assert sum(v.numel() for v in saved.values()) == sum(p.numel() for p in plain.parameters())
    checkpoint = load_checkpoint(store.run_dir(run_id) / "checkpoint.pt")
    assert sum(v.numel() for v in checkpoint["distiller"]["heads"].values()) > 0  # the heads live beside it
    arrays = store.per_sample(run_id, 1)
    for key in ("p_true_head1", "p_true_head2", "rot_acc_head1", "rot_acc_head2", "kl_head1", "p_true_student"):
        assert np.isfinite(arrays[key]).all(), key
    assert np.isfinite(store.epoch_metrics(run_id)["train.rot_acc_head2"]).all()


def test_a_resumed_run_gets_its_heads_back(tiny):
    store = RunStore()
    config = tiny(method={"name": "lsskd"}, student={"name": "mlp", "hidden": [16, 16]}, teacher=None)
    run_id = store.create_run(config)
    assert execute(run_id, store, [StopAfter(store, run_id, 0)]) == "stopped"
    assert execute(run_id, store) == "done"
    straight = store.create_run(config)
    execute(straight, store)
    resumed, plain = store.epoch_metrics(run_id), store.epoch_metrics(straight)
    assert np.allclose(resumed["train.loss_aux"], plain["train.loss_aux"], atol=1e-6)
    assert np.allclose(resumed["test.nll"], plain["test.nll"], atol=1e-6)
