"""Hyperparameter sweeps: an Optuna study whose trials are ordinary runs in the store.

    python -m kdlib sweep CONFIG --search temperature=log:1:16 --search method.w_kd=0.1:0.9 --trials 20

A searched param is `PATH=SPEC`: PATH a config path (a bare name is the method's param), SPEC one
of `LOW:HIGH` (uniform; integers when both bounds are written without a dot), `log:LOW:HIGH`
(log-uniform), `int:LOW:HIGH` or `choice:a,b,c`. Both bounds, or every choice, go through the
config's own validation before anything runs. A trial is a student run executed in this process
and tagged in the store with its study, number and params; the teacher artifact is trained once
and shared, since its hash does not depend on the method. After every epoch the trial reports its
metric to the pruner; a pruned trial's run stops there (status `stopped`, resumable). A trial's
value is its metric at its last epoch. The study lives in Optuna's storage: SQLite in the kdlib
home by default, or an RDB URL that several machines share.
"""

from __future__ import annotations

import copy
import math
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import optuna
import pandas as pd
import yaml
from optuna.trial import TrialState
from pydantic import ValidationError

from kdlib.config import ConfigError, RunConfig, SweepSection, set_path
from kdlib.events import EpochEnded, Sink
from kdlib.runner import execute
from kdlib.store import RunStore
from kdlib.validation import fields_at, format_errors, validate_config

SPEC_GRAMMAR = "write LOW:HIGH, log:LOW:HIGH, int:LOW:HIGH or choice:a,b,c"
_INTEGER = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class SearchParam:
    """One searched config field: a float or integer range (maybe log-uniform), or a choice."""

    path: str  # dotted config path, e.g. method.temperature
    kind: str  # float | int | choice
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.path, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.path, int(self.low), int(self.high))
        return trial.suggest_float(self.path, self.low, self.high, log=self.log)

    def extremes(self) -> tuple:
        """The values whose validity stands for the whole range: both bounds, or every choice."""
        return self.choices if self.kind == "choice" else (self.low, self.high)


def _number(text: str, integer: bool = False) -> float | int:
    text = text.strip()
    if integer:
        if not _INTEGER.fullmatch(text):
            raise ValueError(f"{text!r} is not an integer")
        return int(text)
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return int(text) if _INTEGER.fullmatch(text) else value


def _choice(text: str) -> Any:
    """A choice as a number when it reads as one (YAML would leave 1e-3 a string), else as YAML ("" if empty)."""
    try:
        return _number(text)
    except ValueError:
        return yaml.safe_load(text) if text.strip() else ""


def parse_spec(path: str, spec: str) -> SearchParam:
    """`LOW:HIGH`, `log:LOW:HIGH`, `int:LOW:HIGH` or `choice:a,b,c`; ValueError saying what is wrong."""
    kind, _, rest = spec.strip().partition(":")
    if kind == "choice":
        choices = tuple(_choice(c) for c in rest.split(","))
        if any(c in ("", None) or not isinstance(c, str | int | float | bool) for c in choices):
            raise ValueError(f"choice: give values (numbers or words) between commas, e.g. choice:kd,wsl; got {rest!r}")
        return SearchParam(path, "choice", choices=choices)
    bounds = rest.split(":") if kind in ("log", "int") else spec.strip().split(":")
    if len(bounds) != 2:
        raise ValueError(SPEC_GRAMMAR)
    low, high = (_number(b, integer=kind == "int") for b in bounds)
    if not low < high:
        raise ValueError(f"LOW ({low}) must be below HIGH ({high})")
    if kind == "log":
        if low <= 0:
            raise ValueError(f"a log-uniform range needs LOW > 0, got {low}")
        return SearchParam(path, "float", float(low), float(high), log=True)
    both_integers = isinstance(low, int) and isinstance(high, int)
    return SearchParam(path, "int" if both_integers else "float", low, high)


def search_path(name: str, base: dict) -> str:
    """A dotted config path; a bare name is the method's param of that name, else a top-level field (`seed`)."""
    if "." in name:
        return name
    top_level = name in RunConfig.model_fields and name not in fields_at(("method",), base)
    return name if top_level else f"method.{name}"


def base_data(config: RunConfig) -> dict:
    """What every trial starts from: the config as plain data, its method section with only the params that
    were given, so that a searched `method.name` does not carry the first method's defaults along."""
    data = config.to_dict()
    data["method"] = {k: v for k, v in data["method"].items() if k == "name" or k in config.method.model_fields_set}
    return data


def trial_config(base: dict, values: dict[str, Any]) -> RunConfig:
    """The base config (plain data) with each value put at its config path, validated."""
    data = copy.deepcopy(base)
    for path, value in values.items():
        set_path(data, path.split("."), value, path)
    return validate_config(data)


def parse_search(search: dict[str, str], base: dict) -> list[SearchParam]:
    """Search params from `{path: spec}`; ConfigError naming the path when a spec or a bound is refused."""
    params = []
    for name, spec in search.items():
        path, where = search_path(name, base), f"search {name}={spec}"
        try:
            param = parse_spec(path, spec)
        except ValueError as error:
            raise ConfigError(f"{where}: {error}") from None
        for value in param.extremes():
            try:
                trial_config(base, {path: value})
            except ConfigError as error:
                about_value = str(error).startswith(f"{path}:") and "unknown field" not in str(error)
                at = f"at {value!r}, " if about_value else ""
                raise ConfigError(f"{where}: {at}{error}") from None
        params.append(param)
    return params


def parse_search_flags(items: list[str]) -> dict[str, str]:
    """`--search PATH=SPEC` flags as `{path: spec}`."""
    search = {}
    for item in items:
        path, sep, spec = item.partition("=")
        if not sep or not path.strip():
            raise ConfigError(f"--search {item!r}: write PATH=SPEC, e.g. --search temperature=log:1:16")
        search[path.strip()] = spec.strip()
    return search


def default_direction(metric: str) -> str:
    leaf = metric.rsplit(".", 1)[-1]
    if leaf.endswith("acc"):
        return "maximize"
    if leaf.startswith(("nll", "ece", "loss")):
        return "minimize"
    raise ConfigError(f"sweep.direction: cannot tell whether {metric} should go up or down; set maximize or minimize")


def sweep_section(config: RunConfig, **flags: Any) -> SweepSection:
    """The config's `sweep:` section with command-line flags on top (None: not given), its direction filled in.

    `search` flags add to the section's search; a path searched in both takes the flag's range. Every range
    is checked here, before anything runs.
    """
    section, base = config.sweep or SweepSection(), base_data(config)
    by_path = {search_path(k, base): (k, v) for k, v in section.search.items()}
    by_path |= {search_path(k, base): (k, v) for k, v in (flags.pop("search", None) or {}).items()}
    search = dict(by_path.values())  # as written, so that errors quote the user's own words
    try:
        section = SweepSection.model_validate(
            section.model_dump() | {k: v for k, v in flags.items() if v is not None} | {"search": search}
        )
    except ValidationError as error:
        raise ConfigError("\n".join(f"sweep.{line}" for line in format_errors(error).splitlines())) from None
    if not section.search:
        raise ConfigError("sweep.search: nothing to search; add --search PATH=SPEC or a `sweep: {search: ...}` section")
    split, _, leaf = section.metric.partition(".")
    if leaf in ("acc", "nll", "ece") and split not in config.probes.eval_splits:
        raise ConfigError(
            f"sweep.metric: {section.metric} needs the {split} split evaluated; probes.eval_splits is "
            f"{config.probes.eval_splits}"
        )
    parse_search(section.search, base)
    return section.model_copy(update={"direction": section.direction or default_direction(section.metric)})


def default_storage(store: RunStore) -> str:
    return f"sqlite:///{store.home / 'studies.sqlite'}"


def open_study(section: SweepSection, store: RunStore, pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """Create the study, or join it when its storage has it (another process or machine started it)."""
    direction = section.direction or default_direction(section.metric)
    if pruner is None:
        # epoch 0 says little about where a run ends: judge from the second epoch on
        pruner = optuna.pruners.MedianPruner(n_warmup_steps=1) if section.pruner == "median" else None
    try:
        study = optuna.create_study(
            study_name=section.study or f"sweep-{datetime.now():%Y%m%d-%H%M%S}",
            storage=section.storage or default_storage(store),
            sampler=optuna.samplers.TPESampler(seed=section.seed),
            pruner=pruner or optuna.pruners.NopPruner(),
            direction=direction,
            load_if_exists=True,
        )
    except ImportError:
        raise ConfigError(
            f"sweep.storage: {section.storage}: the database driver is not installed (PostgreSQL: "
            "pip install psycopg2-binary; MySQL: pip install pymysql and a mysql+pymysql:// URL)"
        ) from None
    except Exception as error:  # noqa: BLE001 - SQLAlchemy's URL and connection errors, several classes
        raise ConfigError(f"sweep.storage: {section.storage}: {error}") from None
    wanted = {"metric": section.metric, "direction": direction}
    found = {"metric": study.user_attrs.get("metric", section.metric), "direction": study.direction.name.lower()}
    if found != wanted:
        raise ConfigError(
            f"sweep.study: {study.study_name} optimizes {found['metric']} ({found['direction']}), not "
            f"{section.metric} ({direction}); name another study"
        )
    study.set_user_attr("metric", section.metric)
    return study


@dataclass
class TrialResult:
    number: int
    params: dict[str, Any]
    state: str  # complete | pruned | failed
    value: float | None  # the metric at the last recorded epoch
    run_id: str | None  # None when the trial's config was refused
    error: str | None = None


class PruningSink:
    """Reports a trial's metric to Optuna after each epoch of its run, and stops the run when the pruner says so.

    The stop goes through the store's control flag, which the run obeys at the poll that closes this epoch
    (after its checkpoint). The last epoch is never pruned: a run that trained every epoch is a complete trial.
    """

    def __init__(self, trial: optuna.Trial, metric: str, store: RunStore, run_id: str, epochs: int) -> None:
        self.trial, self.metric, self.store, self.run_id, self.epochs = trial, metric, store, run_id, epochs
        self.pruned_at: int | None = None

    def emit(self, event) -> None:
        if not isinstance(event, EpochEnded) or self.metric not in event.scalars:
            return
        value = float(event.scalars[self.metric])
        self.trial.report(value, event.epoch)
        if event.epoch + 1 < self.epochs and self.trial.should_prune():
            self.pruned_at = event.epoch
            self.store.log_event(
                self.run_id,
                "pruned",
                f"trial {self.trial.number}: {self.metric} = {value:.4g} after epoch {event.epoch}",
            )
            self.store.request(self.run_id, "stop")

    def close(self) -> None:
        pass


def run_trial(
    study: optuna.Study,
    space: list[SearchParam],
    base: dict,
    store: RunStore,
    metric: str,
    extra_sinks: list[Sink] = (),
) -> TrialResult:
    """Ask the study for params, train a run with them in this process, and tell the study how it went."""
    trial = study.ask()
    params = {p.path: p.suggest(trial) for p in space}
    try:
        config = trial_config(base, params)
    except ConfigError as error:
        study.tell(trial, state=TrialState.FAIL)
        return TrialResult(trial.number, params, "failed", None, None, str(error))
    run_id = store.create_run(config, name=f"{study.study_name} #{trial.number}")
    for key, value in (("run_id", run_id), ("home", str(store.home)), ("host", socket.gethostname())):
        trial.set_user_attr(key, value)  # where the run is, for a study shared by several machines
    store.add_study_trial(study.study_name, run_id, trial.number, params, metric, study.direction.name.lower())
    pruning = PruningSink(trial, metric, store, run_id, config.epochs)
    status = execute(run_id, store, extra_sinks, own_sinks=[pruning])
    epochs, error = store.epoch_metrics(run_id), store.run(run_id)["error"]
    value = float(epochs[metric].iloc[-1]) if metric in epochs and len(epochs) else None
    if status == "stopped" and pruning.pruned_at is not None:
        state = "pruned"
    elif status == "done" and value is not None and math.isfinite(value):
        state = "complete"
    else:
        state = "failed"
        recorded = ", ".join(c for c in epochs.columns if c != "step")
        error = error or (
            "stopped from outside the sweep"
            if status == "stopped"
            else f"{metric} was {value}"
            if value is not None
            else f"the run recorded no {metric}; it records: {recorded}"
        )
    store.end_study_trial(run_id, state, value)
    if state == "complete":
        study.tell(trial, value)
    else:
        study.tell(trial, state=TrialState.PRUNED if state == "pruned" else TrialState.FAIL)
    if state == "failed" and error.startswith("KeyboardInterrupt"):
        raise KeyboardInterrupt  # the runner turned Ctrl-C into a failed run; the sweep ends here too
    return TrialResult(trial.number, params, state, value, run_id, error if state == "failed" else None)


def run_sweep(
    config: RunConfig,
    section: SweepSection | None = None,
    home: str | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    on_trial: Callable[[TrialResult], None] | None = None,
) -> optuna.Study:
    """Run `section.trials` trials of the study over `config` (default section: the config's `sweep:`).

    `pruner` replaces the section's (any Optuna pruner); `on_trial` hears each result as it comes.
    """
    section = section or sweep_section(config)
    store, base = RunStore(home), base_data(config)
    space = parse_search(section.search, base)
    study = open_study(section, store, pruner)
    for _ in range(section.trials):
        result = run_trial(study, space, base, store, section.metric)
        if on_trial is not None:
            on_trial(result)
    return study


def storage_trials(study_name: str, storage: str) -> pd.DataFrame:
    """Every trial of a study as its storage has it, from all machines: number, state, value, params, run_id, host."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    rows = [
        {
            "trial": t.number,
            "state": t.state.name.lower(),
            "value": t.value,
            **t.params,
            "run_id": t.user_attrs.get("run_id"),
            "host": t.user_attrs.get("host"),
        }
        for t in study.trials
    ]
    return pd.DataFrame(rows)
