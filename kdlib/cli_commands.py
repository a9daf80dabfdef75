"""The CLI's longer commands (sweep, study, export, set) and what every command shares: naming a run by a prefix
of its id, numbers made plain for JSON. `kdlib.__main__` parses the command line and calls them; like it,
they import torch, optuna and the export formats only inside the commands that need them.
"""

from __future__ import annotations

import json
import math
import sys
from datetime import datetime
from pathlib import Path

from kdlib.store import RunNotFound, RunStore


def clean(value):
    return None if isinstance(value, float) and math.isnan(value) else value


def resolve_run(store: RunStore, text: str | None) -> str:
    """The id of the run that `text` names: a whole id or a prefix of exactly one (None: the latest student run)."""
    if text is None:
        return store.latest_run_id()
    ids = list(store.runs().id)
    if text in ids:
        return text
    matches = [run_id for run_id in ids if run_id.startswith(text)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise RunNotFound(f"no run {text!r} in {store.home}; `python -m kdlib ls --all` lists the runs")
    shown = ", ".join(matches[:8]) + (f" and {len(matches) - 8} more" if len(matches) > 8 else "")
    raise RunNotFound(f"{text!r} starts {len(matches)} runs: {shown}; give more of the id")


def _params_text(params: dict) -> str:
    return "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def cmd_sweep(args) -> int:
    import optuna

    from kdlib.sweep import parse_search_flags, run_sweep, sweep_section
    from kdlib.validation import load_config

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the lines below say what happened
    config = load_config(args.config, args.overrides)
    flags = {k: getattr(args, k) for k in ("trials", "study", "storage", "metric", "direction", "pruner", "seed")}
    section = sweep_section(config, search=parse_search_flags(args.search), **flags)
    if section.study is None:
        section = section.model_copy(update={"study": f"{Path(args.config).stem}-{datetime.now():%Y%m%d-%H%M%S}"})
    store = RunStore(args.home)
    print(
        f"study {section.study}: {section.trials} trials over {', '.join(section.search)}, "
        f"{section.direction} {section.metric}  (store: {store.home})"
    )
    outcomes = []

    def report(trial) -> None:
        outcomes.append(trial.state)
        value = "" if trial.value is None else f"{section.metric}={trial.value:.4f}"
        run = f"run {trial.run_id}" if trial.run_id else ""
        print(
            f"trial {trial.number}  {_params_text(trial.params)}  {value}  {trial.state}  {run}".replace("    ", "  ")
        )
        if trial.error:
            print(f"  error: {trial.error}")

    try:
        study = run_sweep(config, section, home=args.home, on_trial=report)
    except KeyboardInterrupt:
        print("interrupted: the trial that was training is failed (its run resumable); the study keeps the others")
        return 130
    try:
        best = study.best_trial
    except ValueError:
        print("no trial of the study has completed yet")
    else:
        where = best.user_attrs.get("run_id", "?")
        if best.user_attrs.get("home") not in (None, str(store.home)):
            where += f" (in {best.user_attrs.get('host')}:{best.user_attrs['home']})"
        print(f"best: trial {best.number}  {section.metric}={best.value:.4f}  {_params_text(best.params)}  run {where}")
    return 0 if any(state != "failed" for state in outcomes) else 1


def cmd_study(args) -> int:
    from kdlib.store.studies import best_trial, study_summary

    store = RunStore(args.home)
    if args.storage:
        from kdlib.config import ConfigError
        from kdlib.sweep import storage_trials

        if not args.name:
            raise ConfigError("study: name the study to read from --storage")
        try:
            frame, name = storage_trials(args.name, args.storage), args.name
        except KeyError:
            raise ConfigError(f"study: {args.storage} has no study {args.name!r}") from None
        header = f"study {name}: {len(frame)} trials in {args.storage}"
    else:
        studies = store.studies()
        if not studies:
            print(f"no studies in {store.home} yet; start one with `python -m kdlib sweep CONFIG --search ...`")
            return 0
        name = args.name or studies[0]
        if name not in studies:
            raise RunNotFound(f"no study {name!r} in {store.home}; it has: {', '.join(studies)}")
        frame = study_summary(store, name)
        best = best_trial(frame)
        header = f"study {name}: {len(frame)} trials, {frame.direction.iloc[0]} {frame.metric.iloc[0]}" + (
            f"; best: trial {best.trial} ({best.value:.4f}, run {best.run_id})" if best is not None else ""
        )
        frame = frame.drop(columns=["name", "metric", "direction"])
    if args.json:
        rows = [{k: clean(v) for k, v in row.items()} for row in frame.to_dict("records")]
        print(json.dumps({"study": name, "trials": rows}, indent=1, default=str))
    else:
        print(header)
        print(frame.round(4).to_string(index=False))
    return 0


def cmd_export(args) -> int:
    from kdlib.export import ExportError, export_run

    store = RunStore(args.home)
    run_id = resolve_run(store, args.run)
    try:
        written = export_run(store, run_id, args.to, args.folder)
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{run_id} as {args.to}: {len(written)} files in {Path(args.folder).expanduser()}")
    for path in written:
        print(f"  {path.name}")
    return 0


def cmd_set(args) -> int:
    """Change a running or paused run from its next step (kdlib.tuning); with no FIELD=VALUE, what it may change."""
    from kdlib.tuning import TuningRefused, parse_assignments

    store = RunStore(args.home)
    run_id = resolve_run(store, args.run)
    if not args.changes:
        _print_tunables(store, run_id)
        return 0
    try:
        values = store.request_changes(run_id, parse_assignments(args.changes))
    except TuningRefused as error:
        for line in str(error).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    asked = "  ".join(f"{path}={value:g}" for path, value in values.items())
    print(f"{run_id}: asked {asked}; it takes effect at the run's next logged step "
          f"(`python -m kdlib set {run_id}` shows where)")
    return 0


def _print_tunables(store: RunStore, run_id: str) -> None:
    run, spec = store.run(run_id), store.tunables(run_id)
    print(f"{run_id}  {run['name']}  [{run['status']}]")
    now = store.tuned_values(run_id)
    for path, bounds in spec["tunable"].items():
        limits = ", ".join(f"{k} {v:g}" for k, v in bounds.items())
        print(f"  {path} = {now[path]:g}" + (f"  ({limits})" if limits else ""))
    changes = store.changes(run_id)
    for change in changes.itertuples():
        where = f"from epoch {change.epoch}, step {change.epoch_step} of it" if change.state == "applied" else ""
        print(f"  changed {change.path}={change.value:g}  {change.state} {where}".rstrip())
