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


def test_kd_gradient_in_closed_form_is_what_backward_computes():
    """KD works its probe values out at the epoch's end from its logits; they must be those of the
    gradient that autograd puts at the logits, which the trainer's probe reads for other methods."""
    from kdlib.data.base import Batch
    from kdlib.methods.base import MethodContext
    from kdlib.methods.kd import KD, Params
    from kdlib.probes import logit_gradient_stats
    from kdlib.trainer import ColumnTable

    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(3, 4), torch.nn.Linear(3, 4)
    batch = Batch(torch.randn(6, 3), torch.randint(0, 4, (6,)), torch.arange(6))
    kd = KD(Params(temperature=2.0, w_ce=0.3, w_kd=0.7), student, teacher, MethodContext(4, 6, 1, torch.device("cpu")))
    kd.on_epoch_start(0)
    logits = student(batch.x)
    logits.retain_grad()  # the trainer's probe, by hand
    out = kd.loss(batch, logits, teacher(batch.x).detach())
    out.loss.backward()
    autograd = logit_gradient_stats(logits.detach(), logits.grad * len(batch), batch.y)
    rows = ColumnTable(6, torch.device("cpu"))
    rows.write(batch.index, out.per_sample)
    closed_form, _ = kd.finish_per_sample(rows.columns(), batch.y)
    for key, value in autograd.items():
        assert torch.allclose(closed_form[key], value, atol=1e-5), key
    p, p_t = F.softmax(logits.detach(), 1), F.softmax(teacher(batch.x).detach() / 2, 1)
    expected = 0.3 * (p - F.one_hot(batch.y, 4)) + 0.7 * 2.0 * (F.softmax(logits.detach() / 2, 1) - p_t)
    assert torch.allclose(closed_form["logit_grad_norm"], expected.norm(dim=1), atol=1e-5)
    kd.watch_gradients = False  # probes.grad_stats: false
    assert "logit_grad_norm" not in kd.finish_per_sample(rows.columns(), batch.y)[0]
