"""Sweeps: search specs, trials as runs in the store, pruning, joining a study, the CLI and the widget."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from kdlib.__main__ import main
from kdlib.config import ConfigError
from kdlib.runner import execute
from kdlib.store import RunStore
from kdlib.sweep import SearchParam, base_data, parse_search, run_sweep, sweep_section
from kdlib.teachers import teacher_key
from kdlib.validation import validate_config
from kdlib.views import best_trial, searched_params, study_curves, study_summary
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parent.parent
SEARCH = {"temperature": "log:1:8", "w_kd": "0.1:0.9"}


def parse(spec: str) -> list[SearchParam]:
    path, _, text = spec.partition("=")
    return parse_search({path: text}, base_data(validate_config(tiny_config())))


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("temperature=log:1:16", SearchParam("method.temperature", "float", 1.0, 16.0, log=True)),
        ("method.w_kd=0.1:0.9", SearchParam("method.w_kd", "float", 0.1, 0.9)),
        ("temperature=1:16", SearchParam("method.temperature", "int", 1, 16)),
        ("temperature=1.0:16", SearchParam("method.temperature", "float", 1.0, 16)),
        ("epochs=int:1:4", SearchParam("epochs", "int", 1, 4)),
        ("seed=choice:0,1,2", SearchParam("seed", "choice", choices=(0, 1, 2))),
        ("optimizer.lr=log:1e-4:1e-1", SearchParam("optimizer.lr", "float", 1e-4, 0.1, log=True)),
        ("method.name=choice:kd, wsl", SearchParam("method.name", "choice", choices=("kd", "wsl"))),
    ],
)
def test_search_specs_are_parsed_and_bare_names_are_method_params(spec, expected):
    assert parse(spec) == [expected]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("temprature=1:4", "search temprature=1:4: method.temprature: unknown field; did you mean 'temperature'?"),
        ("temperature=-1:2", "search temperature=-1:2: at -1, method.temperature: every value must be > 0"),
        ("w_kd=-0.5:0.9", "search w_kd=-0.5:0.9: at -0.5, method.w_kd:"),
        ("optimizer.lrr=0.1:0.2", "optimizer.lrr: unknown field; did you mean 'lr'?"),
        ("temperature=log:0:4", "a log-uniform range needs LOW > 0, got 0"),
        ("temperature=4:1", "LOW (4) must be below HIGH (1)"),
        ("temperature=a:2", "'a' is not a number"),
        ("temperature=1:2:3", "write LOW:HIGH, log:LOW:HIGH, int:LOW:HIGH or choice:a,b,c"),
        ("epochs=int:1.5:3", "'1.5' is not an integer"),
        ("method.name=choice:kd,nope", "method.name: 'nope' is not a method"),
        ("temperature=choice:", "choice: give values"),
        ("student.hidden.width=1:2", "student.hidden.width: 'hidden' is a value, not a section"),
    ],
)
def test_bad_specs_name_the_path_and_what_is_wrong(spec, message):
    with pytest.raises(ConfigError) as error:
        parse(spec)
    assert message in str(error.value)


def test_the_yaml_section_is_no_part_of_a_run_and_flags_override_it():
    plain = validate_config(tiny_config())
    config = validate_config(tiny_config(sweep={"search": {"temperature": "1:4", "w_kd": "0.2:0.8"}, "trials": 5}))
    assert "sweep" not in config.to_dict() and config.to_yaml() == plain.to_yaml()
    assert teacher_key(config) == teacher_key(plain)
    section = sweep_section(config, search={"method.temperature": "log:2:8"}, trials=2, study=None, metric="test.nll")
    assert section.search == {"method.temperature": "log:2:8", "w_kd": "0.2:0.8"}
    assert (section.trials, section.metric, section.direction, section.study) == (2, "test.nll", "minimize", None)
    assert sweep_section(plain, search=SEARCH).direction == "maximize"  # val.acc
    with pytest.raises(ConfigError, match="cannot tell whether lr should go up or down"):
        sweep_section(plain, search=SEARCH, metric="lr")
    with pytest.raises(ConfigError, match="quoted|write it as text"):
        validate_config(tiny_config(sweep={"search": {"temperature": 76}}))  # YAML's reading of 1:16
    with pytest.raises(ConfigError, match="nothing to search"):
        sweep_section(plain)
    with pytest.raises(ConfigError, match=r"sweep.metric: val.acc needs the val split evaluated"):
        sweep_section(validate_config(tiny_config(probes={"eval_splits": ["test"]})), search=SEARCH)
    with pytest.raises(ConfigError, match=r"sweep.trials: Input should be greater than or equal to 1"):
        sweep_section(plain, search=SEARCH, trials=0)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A finished 3-trial sweep over temperature and w_kd of the tiny KD config, in a store of its own."""
    home = tmp_path_factory.mktemp("sweep-home")
    config = validate_config(tiny_config())
    section = sweep_section(config, search=SEARCH, trials=3, study="tiny", pruner="none", seed=0)
    results = []
    study = run_sweep(config, section, home=str(home), on_trial=results.append)
    return RunStore(home), study, results


def test_every_trial_is_a_run_in_the_store_tagged_with_its_study_and_params(swept):
    store, study, results = swept
    assert [r.state for r in results] == ["complete"] * 3
    trials = store.study_trials("tiny")
    assert store.studies() == ["tiny"] and trials.trial.tolist() == [0, 1, 2]
    assert trials.run_id.tolist() == [r.run_id for r in results]
    assert set(trials.status) == {"done"} and set(trials.state) == {"complete"}
    for _, row in trials.iterrows():
        config = store.config(row.run_id)
        assert (
            config.method.temperature.value
            == row["method.temperature"]
            == results[row.trial].params["method.temperature"]
        )
        assert config.method.w_kd.value == row["method.w_kd"]
        assert 1 <= config.method.temperature.value <= 8 and config.sweep is None
        assert store.run(row.run_id)["name"] == f"tiny #{row.trial}"
    assert searched_params(study_summary(store, "tiny")) == ["method.temperature", "method.w_kd"]
    assert len(store.runs("teacher")) == 1  # trained once, shared by every trial


def test_the_best_trial_is_the_best_last_epoch_metric_in_the_store(swept):
    store, study, results = swept
    finals = {r.run_id: store.epoch_metrics(r.run_id)["val.acc"].iloc[-1] for r in results}
    assert [r.value for r in results] == list(finals.values())
    assert study.best_value == max(finals.values())
    summary = study_summary(store, "tiny")
    assert best_trial(summary).value == study.best_value
    assert summary.val_acc.tolist() == summary.value.tolist()
    assert summary.epochs_done.tolist() == [3, 3, 3]
    assert study.best_trial.user_attrs["run_id"] in finals


def test_a_pruned_trial_stops_its_run_resumably_and_is_recorded_pruned(tiny):
    store = RunStore()
    section = sweep_section(tiny(), search={"temperature": "1.0:4.0"}, trials=1, study="pruned")
    # val.acc is never >= 1.01, so this pruner prunes at the first report (epoch 0)
    study = run_sweep(tiny(), section, pruner=optuna.pruners.ThresholdPruner(lower=1.01))
    trials = store.study_trials("pruned")
    run_id = trials.run_id.iloc[0]
    assert (trials.state.iloc[0], trials.status.iloc[0]) == ("pruned", "stopped")
    assert study.trials[0].state == optuna.trial.TrialState.PRUNED
    epochs = store.epoch_metrics(run_id)
    assert len(epochs) == 1 and trials.value.iloc[0] == epochs["val.acc"].iloc[0]
    assert "pruned" in store.events(run_id).kind.tolist()
    assert execute(run_id, store) == "done" and len(store.epoch_metrics(run_id)) == 3  # resumable


def test_a_trial_without_its_metric_fails_and_the_sweep_goes_on(tiny):
    section = sweep_section(
        tiny(),
        search={"temperature": "1.0:4.0"},
        trials=2,
        study="nometric",
        metric="train.nothing",
        direction="minimize",
    )
    results = []
    run_sweep(tiny(), section, on_trial=results.append)
    assert [r.state for r in results] == ["failed", "failed"]
    assert "the run recorded no train.nothing; it records:" in results[0].error
    assert RunStore().study_trials("nometric").state.tolist() == ["failed", "failed"]


@pytest.mark.slow
def test_the_cli_sweeps_and_a_second_sweep_joins_the_same_study(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(sweep={"search": {"w_kd": "0.1:0.9"}, "pruner": "none"})))
    home = str(tmp_path / "home")
    command = [sys.executable, "-m", "kdlib", "sweep", str(config), "--search", "temperature=log:1:8"]
    flags = ["--trials", "2", "--study", "joint", "--home", home]
    done = subprocess.run(command + flags, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("study joint: 2 trials over w_kd, temperature, maximize val.acc")
    assert [line.split()[:2] for line in lines[1:3]] == [["trial", "0"], ["trial", "1"]]
    assert "complete  run " in lines[1] and lines[-1].startswith("best: trial ")

    assert main(["sweep", str(config), "--trials", "1", "--study", "joint", "--home", home]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("trial 2  method.w_kd=")
    assert main(["study", "joint", "--json", "--home", home]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [t["trial"] for t in listed["trials"]] == [0, 1, 2]
    assert {"method.temperature", "method.w_kd", "state", "value", "run_id", "val_acc"} <= set(listed["trials"][0])
    assert listed["trials"][2]["method.temperature"] is None  # the second sweep searched w_kd only
    storage = optuna.load_study(study_name="joint", storage=f"sqlite:///{home}/studies.sqlite")
    assert len(storage.trials) == 3
    assert main(["study", "--home", home]) == 0  # the latest study, as a table
    assert capsys.readouterr().out.startswith("study joint: 3 trials, maximize val.acc; best: trial ")


def test_validate_prints_the_sweep_section_apart_from_the_run(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(sweep={"search": {"w_kd": "0.1:0.9"}, "trials": 4})))
    assert main(["validate", str(config)]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["sweep"] == {"search": {"w_kd": "0.1:0.9"}, "trials": 4}
    assert validate_config(printed).to_dict() == validate_config(tiny_config()).to_dict()


def test_the_cli_refuses_bad_searches_before_anything_runs(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config()))
    assert main(["sweep", str(config), "--search", "temprature=1:4"]) == 2
    assert "error: search temprature=1:4: method.temprature: unknown field; did you mean" in capsys.readouterr().err
    assert main(["sweep", str(config), "--search", "temperature"]) == 2
    assert "write PATH=SPEC" in capsys.readouterr().err
    assert RunStore().runs(None).empty
    assert main(["sweep", str(config), "--search", "temperature=1:4", "--storage", "postgresql://u:p@nowhere/db"]) == 2
    assert "the database driver is not installed" in capsys.readouterr().err
    assert main(["study"]) == 0 and "no studies" in capsys.readouterr().out


def test_the_study_view_widget_shows_the_trials_and_their_figures(swept):
    from kdlib.widgets import StudyView

    store, study, results = swept
    view = StudyView("tiny", home=str(store.home))
    for r in results:
        assert r.run_id in view.table.value
    assert "3 trials" in view.summary.value and "maximize" in view.summary.value
    assert view.metric.value == "val.acc"
    panels = {t.xaxis for t in view.params_figure.data}
    assert len(panels) == 2 and {t.name for t in view.params_figure.data} == {"complete"}
    assert [t.name for t in view.curves_figure.data] == ["trial 0", "trial 1", "trial 2"]
    view.metric.value = "test.nll"
    assert view.curves_figure.layout.yaxis.title.text == "test NLL"  # the stored name in words
    curves = study_curves(store, store.study_trials("tiny"))
    assert list(view.curves_figure.data[0].y) == curves["trial 0"]["test.nll"].tolist()
