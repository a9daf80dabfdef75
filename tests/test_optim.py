"""Optimizers and learning-rate schedules: kdlib's short names, or any torch class by name with its arguments."""

from __future__ import annotations

import pytest
import torch

from kdlib.config import ConfigError
from kdlib.optim import make_lr_scheduler, make_optimizer
from kdlib.runner import execute
from kdlib.store import RunStore
from tests.conftest import StopAfter

PARAMS = [torch.nn.Parameter(torch.zeros(3))]


def test_a_torch_optimizer_by_name_takes_its_keyword_arguments(tiny):
    config = tiny(optimizer={"name": "SGD", "lr": 0.1, "momentum": 0.8, "nesterov": True, "dampening": 0.0})
    optimizer = make_optimizer(config.optimizer, PARAMS)
    assert isinstance(optimizer, torch.optim.SGD)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.1, 0.8, True, 0.0)
    adam = make_optimizer(tiny(optimizer={"name": "Adam", "lr": 0.01, "betas": [0.8, 0.9]}).optimizer, PARAMS)
    assert tuple(adam.param_groups[0]["betas"]) == (0.8, 0.9)
    rmsprop = make_optimizer(tiny(optimizer={"name": "RMSprop", "lr": 0.01}).optimizer, PARAMS)
    assert rmsprop.param_groups[0]["momentum"] == 0  # torch's default: kdlib's sgd default of 0.9 is not written


def test_the_short_names_keep_their_defaults(tiny):
    sgd = make_optimizer(tiny(optimizer={"name": "sgd", "lr": 0.1}).optimizer, PARAMS)
    assert sgd.param_groups[0]["momentum"] == 0.9 and not sgd.param_groups[0]["nesterov"]
    assert make_lr_scheduler(tiny(lr_schedule={"name": "step", "milestones": [2]}).lr_schedule, sgd) is None


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"optimizer": {"name": "Adamm"}}, "optimizer.name: 'Adamm' is not sgd or adam or adamw nor a class of "
                                           "torch.optim; did you mean 'Adam'"),
        ({"optimizer": {"name": "Adam", "betaz": [0.9, 0.99]}}, "optimizer.betaz: not an argument of torch.optim.Adam; did you "
                                                                "mean 'betas'?"),
        ({"lr_schedule": {"name": "MultiStepLR", "milestone": [3]}}, "lr_schedule.milestone: not an argument of "
                                                                    "torch.optim.lr_scheduler.MultiStepLR; did you "
                                                                    "mean 'milestones'?"),
        ({"optimizer": {"name": "adam", "betas": [0.9, 0.99]}}, "optimizer.betas: unknown field; valid fields"),
        ({"lr_schedule": {"name": "CosineAnnealingLR", "T_max": 5, "warmup_epochs": 1}}, "warmup_epochs: kdlib's "
                                                                                         "warm-up goes with"),
    ],
)
def test_a_wrong_name_or_argument_is_refused_with_the_field(tiny, section, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        tiny(**section)


def test_an_epoch_scheduler_sets_the_rate_of_each_epoch_and_resumes_exactly(tiny):
    config = tiny(epochs=4, method={"name": "ce"}, optimizer={"name": "adam", "lr": 0.01},
                  lr_schedule={"name": "MultiStepLR", "milestones": [1, 3], "gamma": 0.1})
    store = RunStore()
    straight = store.create_run(config)
    assert execute(straight, store) == "done", store.run(straight)["error"]
    assert store.epoch_metrics(straight)["lr"].tolist() == pytest.approx([0.01, 0.001, 0.001, 0.0001])
    resumed = store.create_run(config)
    assert execute(resumed, store, [StopAfter(store, resumed, 1)]) == "stopped"
    assert execute(resumed, store) == "done"
    for key in ("lr", "train.loss", "val.acc"):
        assert store.epoch_metrics(resumed)[key].tolist() == pytest.approx(store.epoch_metrics(straight)[key].tolist())


def test_a_step_scheduler_and_a_plateau_scheduler_run(tiny):
    store = RunStore()
    one_cycle = store.create_run(tiny(epochs=2, method={"name": "ce"}, probes={"log_every": 1},
                                      lr_schedule={"name": "OneCycleLR", "max_lr": 0.05, "total_steps": 20,
                                                   "interval": "step"}))
    assert execute(one_cycle, store) == "done", store.run(one_cycle)["error"]
    rates = store.metrics(one_cycle, scope="step").query("key == 'lr'").value
    assert rates.nunique() > 5 and rates.max() <= 0.05
    plateau = store.create_run(tiny(epochs=2, method={"name": "ce"},
                                    lr_schedule={"name": "ReduceLROnPlateau", "patience": 0, "factor": 0.5}))
    assert execute(plateau, store) == "done", store.run(plateau)["error"]
    missing = store.create_run(tiny(epochs=2, method={"name": "ce"},
                                    lr_schedule={"name": "ReduceLROnPlateau", "monitor": "val.loss"}))
    assert execute(missing, store) == "failed"
    assert "lr_schedule.monitor: 'val.loss' is not an epoch scalar" in store.run(missing)["error"]
