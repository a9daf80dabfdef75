"""The gradient probe: read at the logits after the one backward pass, checked against closed forms."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from kdlib.runner import execute
from kdlib.store import RunStore


def test_ce_gradient_ratio_is_one_for_every_sample(tiny):
    store = RunStore()
    run_id = store.create_run(tiny(method={"name": "ce"}, epochs=2))
    execute(run_id, store)
    arrays = store.per_sample(run_id, 1)
    assert np.allclose(arrays["logit_grad_ratio"], 1, atol=2e-3)
    assert np.allclose(arrays["logit_grad_ratio_true"], 1, atol=2e-3)


def test_pskd_true_class_ratio_agrees_with_its_closed_form(tiny):
    store = RunStore()
    run_id = store.create_run(tiny(method={"name": "pskd", "alpha_T": 0.8}, epochs=4))
    execute(run_id, store)
    arrays = store.per_sample(run_id, 3)
    autograd, closed_form = arrays["logit_grad_ratio_true"].astype(float), arrays["grad_scale_true"].astype(float)
    assert np.allclose(autograd, closed_form, atol=5e-3, rtol=5e-3)  # float16 storage
    assert np.abs(autograd - 1).max() > 0.05  # PS-KD does rescale


def test_the_engine_probe_gives_kd_gradient_in_closed_form():
    """The engine reads d loss_i / d z_i at the logits the default forward hands to the loss; for KD that
    is w_ce (p - e_y) + w_kd T (p^T - q^T) per sample (before the batch's 1/N)."""
    from kdlib.data.base import Batch
    from kdlib.methods.base import MethodContext, model_teacher
    from kdlib.methods.kd import KD, Params
    from kdlib.recording import GradientProbe

    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(3, 4), torch.nn.Linear(3, 4)
    batch = Batch(torch.randn(6, 3), torch.randint(0, 4, (6,)), torch.arange(6))
    context = MethodContext(4, 6, 1, torch.device("cpu"), teacher_logits=model_teacher(teacher))
    kd = KD(Params(temperature=2.0, w_ce=0.3, w_kd=0.7), student, teacher, context)
    kd.on_epoch_start(0)
    probe = GradientProbe(6, torch.device("cpu"))
    out = kd.forward(batch)
    watched = probe.watch(out.logits)
    out.loss.backward()
    probe.read(watched, batch.index, 1.0)
    values = probe.per_sample(batch.y)
    logits = student(batch.x).detach()
    p, p_t = F.softmax(logits, 1), F.softmax(teacher(batch.x).detach() / 2, 1)
    expected = 0.3 * (p - F.one_hot(batch.y, 4)) + 0.7 * 2.0 * (F.softmax(logits / 2, 1) - p_t)
    assert torch.allclose(values["logit_grad_norm"], expected.norm(dim=1), atol=1e-5)
    true = batch.y[:, None]
    ce_true = (p - F.one_hot(batch.y, 4)).gather(1, true).squeeze(1)
    assert torch.allclose(values["logit_grad_ratio_true"], expected.gather(1, true).squeeze(1) / ce_true, atol=1e-5)


def test_a_step_without_logits_to_watch_leaves_the_probe_empty():
    from kdlib.recording import GradientProbe

    probe = GradientProbe(3, torch.device("cpu"))
    assert probe.watch(None) is None
    assert probe.watch(torch.zeros(3, 2)) is None  # no gradient flows to it
    probe.read(None, torch.arange(3), 1.0)
    assert probe.per_sample(torch.zeros(3, dtype=torch.long)) == {}
