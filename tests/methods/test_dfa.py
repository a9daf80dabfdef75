"""DFA against METHODS.md section 8: aggregation, the search's gradients, OFD's loss, a frozen teacher."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch
from torch import nn

from kdlib.data.base import Batch, LoaderSplit, TensorSplit
from kdlib.methods.base import MethodContext
from kdlib.methods.dfa import (
    DFA,
    Params,
    aggregate,
    block_paths,
    bn_margin,
    make_connector,
    ofd_loss_per_sample,
    split_in_two,
    stage_weights,
    teacher_groups,
)
from kdlib.models import MODELS, FeatureTaps, build_model
from kdlib.runner import execute
from kdlib.store import RunStore
from tests.conftest import StopAfter


def model(section: dict, input_shape: tuple[int, ...], num_classes: int = 3) -> nn.Module:
    return build_model(MODELS.get(section["name"]).Params(**section), input_shape, num_classes)


def make_dfa(student: dict, teacher: dict, input_shape=(2,), n=64, **params) -> DFA:
    torch.manual_seed(0)
    x, y = torch.randn(n, *input_shape), torch.arange(n) % 3
    s, t = model(student, input_shape), model(teacher, input_shape).eval().requires_grad_(False)
    context = MethodContext(3, n, 2, torch.device("cpu"), TensorSplit(x, y))
    return DFA(Params(**params), s, t, context)


def batch_of(distiller: DFA, n: int = 16) -> Batch:
    train = distiller.context.train
    return Batch(train.x[:n], train.y[:n], train.index[:n])


def weights_hash(module: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode() + tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


MLP_PAIR = ({"name": "mlp", "hidden": [8]}, {"name": "mlp", "hidden": [16, 16]})


# METHODS.md section 8, test (3): s = [1, -1], t = [0.5, -2], m = -1 -> target [0.5, -1], mask [1, 0] -> 0.25
@pytest.mark.parametrize("shape", [(1, 2), (1, 1, 2), (1, 1, 1, 2)])
def test_ofd_loss_matches_hand_computation(shape):
    source, target = torch.tensor([1.0, -1.0]).view(shape), torch.tensor([0.5, -2.0]).view(shape)
    margin = torch.full((shape[1],), -1.0)
    assert ofd_loss_per_sample(source, target, margin).tolist() == pytest.approx([0.25])


def test_ofd_loss_without_margin_is_plain_squared_error():
    source, target = torch.tensor([[1.0, -1.0]]), torch.tensor([[0.5, -2.0]])
    assert ofd_loss_per_sample(source, target, None).tolist() == pytest.approx([0.25 + 1.0])


def test_bn_margin_is_the_mean_of_the_negative_part():
    bn = nn.BatchNorm1d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 1.0, 2.0]))
        bn.bias.copy_(torch.tensor([0.0, -10.0, 20.0]))
    # N(0, 1): E[x | x < 0] = -sqrt(2/pi); N(-10, 1): about -10; N(20, 2^2): P(x < 0) tiny -> -3 * 2
    assert bn_margin(bn).tolist() == pytest.approx([-math.sqrt(2 / math.pi), -10.0, -6.0], abs=1e-4)


def test_ofd_stage_weights_halve_towards_the_input():
    assert stage_weights(3) == [0.25, 0.5, 1.0]


@pytest.mark.parametrize(
    ("teacher", "student", "groups"),
    [(3, 3, [[0], [1], [2]]), (6, 3, [[0, 1], [2, 3], [4, 5]]), (3, 1, [[0, 1, 2]]), (4, 3, [[0, 1], [2], [3]])],
)
def test_teacher_stages_are_grouped_in_order(teacher, student, groups):
    assert teacher_groups(teacher, student) == groups


def test_repeated_blocks_of_a_stage_are_its_candidates():
    resnet32 = model({"name": "resnet32"}, (3, 32, 32))
    assert block_paths(resnet32, "layer2", True) == [f"layer2.{i}" for i in range(5)]
    assert block_paths(resnet32, "layer2", False) == ["layer2"]
    assert block_paths(model({"name": "resnet8"}, (3, 32, 32)), "layer1", True) == ["layer1"]
    wrn = model({"name": "wrn", "depth": 16}, (3, 32, 32))
    assert block_paths(wrn, "block3", True) == ["block3.layer.0", "block3.layer.1"]
    assert block_paths(model({"name": "cnn1d"}, (40,)), "stages.0", True) == ["stages.0"]  # conv, BN, ReLU


@pytest.mark.parametrize(
    ("source", "target"),
    [((8,), (16,)), ((8, 40), (16, 40)), ((8, 40), (16, 20)), ((8, 4, 4), (16, 2, 2)), ((8,), (4, 10)), ((8, 5), (3,))],
)
def test_connectors_map_any_feature_shape_to_any_other(source, target):
    assert make_connector(source, target)(torch.randn(4, *source)).shape == (4, *target)


def test_aggregation_weights_sum_to_one_per_stage():
    distiller = make_dfa({"name": "mlp", "hidden": [8, 8]}, {"name": "mlp", "hidden": [16, 16, 16, 16]})
    with torch.no_grad():
        for aggregation in distiller.aggregations:
            aggregation.alpha.normal_(0, 3)
    scalars = distiller.alpha_scalars()
    assert len(scalars) == 4  # two candidates for each of two stages
    for stage in ("stage1", "stage2"):
        total = sum(v for k, v in scalars.items() if k.startswith(f"dfa.alpha.{stage}."))
        assert total == pytest.approx(1.0, abs=1e-6)


# METHODS.md section 8, test (1)
def test_one_hot_alpha_reproduces_that_candidate_exactly():
    candidates = [torch.randn(4, 3, 5) for _ in range(3)]
    for j in range(3):
        alpha = torch.full((3,), -1e4)
        alpha[j] = 1e4
        assert torch.equal(aggregate(candidates, alpha), candidates[j])

    distiller = make_dfa(*MLP_PAIR)
    x = batch_of(distiller).x
    with FeatureTaps(distiller.teacher, ["stage1", "stage2"]) as taps:
        native = distiller.teacher(x)
    for j, tap in enumerate(["stage1", "stage2"]):
        with torch.no_grad():
            distiller.aggregations[0].alpha.copy_(torch.tensor([1e4, -1e4] if j == 0 else [-1e4, 1e4]))
            logits, (aggregated,) = distiller.teacher_pass(x)
        assert torch.equal(aggregated, taps.features[tap])
    assert torch.equal(logits, native)  # one-hot on each group's last candidate: the plain teacher


# METHODS.md section 8, test (2)
def test_alpha_gets_gradient_in_the_search_step_only():
    distiller = make_dfa({"name": "mlp", "hidden": [8, 8]}, {"name": "mlp", "hidden": [16, 16, 16, 16]}, search_steps=2)
    search = distiller.start_search()
    alphas = [a.alpha for a in distiller.aggregations]

    distiller.bridge_loss(search, batch_of(distiller), detach_alpha=False).backward(inputs=alphas)
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in alphas)  # L_bridge reaches alpha
    for a in alphas:
        a.grad = None

    before = [a.detach().clone() for a in alphas]
    distiller.weight_step(search, batch_of(distiller))
    assert all(a.grad is None for a in alphas)
    assert all(torch.equal(a, b) for a, b in zip(alphas, before, strict=True))
    distiller.alpha_step(search, batch_of(distiller))
    assert all(not torch.equal(a, b) for a, b in zip(alphas, before, strict=True))

    distiller.prepare(lambda step, scalars: None)  # searched or not, the distillation freezes alpha
    distiller.on_epoch_start(0)
    out = distiller.forward(batch_of(distiller))
    out.loss.backward()
    assert all(a.grad is None for a in alphas)
    assert all(p.grad is not None for p in distiller.extra_parameters())


# METHODS.md section 8, test (4)
def test_teacher_weights_are_unchanged_by_the_search_and_distillation():
    distiller = make_dfa(
        {"name": "cnn1d", "channels": [4, 4]}, {"name": "cnn1d", "channels": [8, 8, 8, 8]}, (20,), search_steps=3
    )
    before = weights_hash(distiller.teacher)
    distiller.prepare(lambda step, scalars: None)
    distiller.on_epoch_start(0)
    distiller.forward(batch_of(distiller)).loss.backward()
    assert weights_hash(distiller.teacher) == before


def test_candidates_of_another_shape_get_an_adapter_and_images_work():
    # cnn2d blocks halve H and W: the group's first candidate is 8x4x4, its output 16x2x2
    distiller = make_dfa({"name": "cnn2d", "channels": [4]}, {"name": "cnn2d", "channels": [8, 16]}, (3, 8, 8))
    assert distiller.target_shapes == [(16, 2, 2)] and distiller.student_shapes == [(4, 4, 4)]
    first, last = distiller.aggregations[0].adapters
    assert isinstance(last, nn.Identity) and not isinstance(first, nn.Identity)
    assert distiller.margins[0] is not None  # the stage's BN gives OFD's margin
    distiller.params.search_steps = 2
    distiller.prepare(lambda step, scalars: None)
    distiller.on_epoch_start(0)
    out = distiller.forward(batch_of(distiller))
    assert torch.isfinite(out.loss) and out.per_sample["feature_loss"].shape == (16,)


def test_the_held_out_half_is_disjoint_and_seeded():
    split = TensorSplit(torch.arange(10.0)[:, None], torch.zeros(10))
    train, held_out = split_in_two(split, 0.5, seed=3)
    assert len(train) == len(held_out) == 5
    assert set(train.x[:, 0].tolist()).isdisjoint(held_out.x[:, 0].tolist())
    assert torch.equal(split_in_two(split, 0.5, seed=3)[1].x, held_out.x)


def test_a_loader_split_is_halved_through_a_subset():
    dataset = torch.utils.data.TensorDataset(torch.arange(8.0)[:, None], torch.arange(8))
    train, held_out = split_in_two(LoaderSplit(dataset, torch.arange(8), num_workers=0, pin_memory=False), 0.25, seed=0)
    assert (len(train), len(held_out)) == (6, 2)
    seen = torch.cat([b.y for b in held_out.batches(4)])
    assert torch.equal(seen, held_out.targets)


def test_a_restored_search_is_not_run_again():
    distiller = make_dfa(*MLP_PAIR, search_steps=2)
    logged = []
    distiller.prepare(lambda step, scalars: logged.append(step))
    assert logged == [0, 2]
    restored = make_dfa(*MLP_PAIR, search_steps=2)
    restored.load_state_dict(distiller.state_dict())
    restored.prepare(lambda step, scalars: logged.append(step))
    assert logged == [0, 2]
    assert torch.equal(restored.aggregations[0].alpha, distiller.aggregations[0].alpha)


def test_dfa_searches_then_distils_through_the_trainer_and_resumes(tiny):
    store = RunStore()
    config = tiny(method={"name": "dfa", "search_steps": 6, "search_log_every": 2, "alpha_lr": 0.01}, epochs=3)
    run_id = store.create_run(config)
    assert execute(run_id, store, [StopAfter(store, run_id, 0)]) == "stopped"
    assert execute(run_id, store) == "done", store.run(run_id)["error"]

    search = store.metrics(run_id).query("epoch == -1")
    alpha = search[search.key.str.startswith("dfa.alpha")]
    assert sorted(alpha.step.unique()) == [0, 2, 4, 6]  # recorded once: the resumed run did not search again
    assert set(alpha.key) == {"dfa.alpha.stage1.1", "dfa.alpha.stage1.2"}  # teacher stages 1 and 2 for stage1
    assert np.allclose(alpha.groupby("step").value.sum(), 1.0)
    assert alpha.query("step == 6").value.tolist() != [0.5, 0.5]

    arrays = store.per_sample(run_id, 2)
    for key in ("feature_loss", "feature_loss_stage1", "p_true_student", "loss_per_sample"):
        assert np.isfinite(arrays[key]).all(), key
    assert np.allclose(arrays["feature_loss"], arrays["feature_loss_stage1"])

    straight = store.create_run(config)  # the interrupted run ends where an uninterrupted one does
    assert execute(straight, store) == "done"
    assert np.allclose(store.epoch_metrics(straight)["test.nll"], store.epoch_metrics(run_id)["test.nll"], atol=1e-6)
