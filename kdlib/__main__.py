"""The command line: `kdlib` (or `python -m kdlib`) run | validate | ls | show | rm | resume | pause | stop |
set | sweep | study | export | reference | app.

Commands that only read the store (`--help`, `ls`, `show`, `rm`, `study`, `export --to parquet`) import no
torch: what trains or validates a config is imported inside the commands that need it. The longer
commands (sweep, study, export) are in kdlib.cli_commands.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from kdlib import __version__
from kdlib.cli_commands import clean, cmd_export, cmd_set, cmd_study, cmd_sweep, resolve_run  # noqa: F401 (by name)
from kdlib.store import ACTIVE, RunNotFound, RunStore, StoreError


class ProgressSink:
    """A tqdm bar over the steps of a run, with the last epoch's accuracy beside it."""

    def __init__(self, label: str) -> None:
        self.label, self.bar = label, None

    def emit(self, event) -> None:
        from tqdm import tqdm

        from kdlib.events import EpochEnded, RunEnded, RunStarted, StepLogged

        if isinstance(event, RunStarted):
            total = event.total_epochs * event.steps_per_epoch
            self.bar = tqdm(
                total=total,
                initial=event.start_epoch * event.steps_per_epoch,
                desc=self.label,
                unit="step",
                dynamic_ncols=True,
            )
        elif self.bar is None:
            return
        elif isinstance(event, StepLogged):
            self.bar.update(event.step - self.bar.n)
        elif isinstance(event, EpochEnded):
            self.bar.update(event.step - self.bar.n)
            shown = {k: event.scalars[k] for k in ("train.loss", "val.acc", "test.acc") if k in event.scalars}
            self.bar.set_postfix({"epoch": event.epoch, **{k: f"{v:.4f}" for k, v in shown.items()}})
        elif isinstance(event, RunEnded):
            self.bar.close()

    def close(self) -> None:
        pass


def _home_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", help="the kdlib home folder (default: $KDLIB_HOME or ./runs)")


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a YAML run config, e.g. configs/quickstart.yaml")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override a field, e.g. --set method.temperature=2 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdlib", description="KD Explorer: knowledge distillation runs")
    parser.add_argument("--version", action="version", version=f"kdlib {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="train a run in the foreground with a progress bar")
    _config_args(run)
    run.add_argument("--name", help="a name for the run")
    run.add_argument("--background", action="store_true", help="start it in its own process and return at once")
    _home_arg(run)

    validate = commands.add_parser("validate", help="check a config file and print it in full")
    _config_args(validate)

    ls = commands.add_parser("ls", help="list the runs in the store")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.add_argument("--all", action="store_true", help="include teacher runs")
    _home_arg(ls)

    show = commands.add_parser("show", help="a run's status and results (default: the latest run)")
    show.add_argument("run", nargs="?", help="run id or its unique prefix (default: the latest student run)")
    show.add_argument("--json", action="store_true", help="machine-readable output, the stored config included")
    show.add_argument("--config", action="store_true", help="print the run's config as it was stored")
    _home_arg(show)

    rm = commands.add_parser("rm", help="remove runs: their rows in the store and their folders")
    rm.add_argument("runs", nargs="+", metavar="run", help="run id or its unique prefix")
    rm.add_argument("--force", action="store_true", help="also a queued, running or paused run (asked to stop)")
    _home_arg(rm)

    for name, text in (
        ("resume", "continue a paused, stopped or failed run"),
        ("pause", "pause a running run"),
        ("stop", "stop a running run (it can be resumed)"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("run", help="run id or its unique prefix")
        if name == "resume":
            sub.add_argument("--from-scratch", action="store_true",
                             help="train it again from epoch 0 (a run whose checkpoint is gone)")
        _home_arg(sub)

    tune = commands.add_parser("set", help="change a running run from its next step, e.g. method.temperature=1.5")
    tune.add_argument("run", help="run id or its unique prefix")
    tune.add_argument("changes", nargs="*", metavar="FIELD=VALUE",
                      help="a method param that takes a schedule, or optimizer.lr (a bare name is a method param); "
                      "none: list what the run may change, its values now and its changes so far")
    _home_arg(tune)

    sweep = commands.add_parser("sweep", help="search hyperparameters: an Optuna study whose trials are runs")
    _config_args(sweep)
    sweep.add_argument(
        "--search",
        action="append",
        default=[],
        metavar="PATH=SPEC",
        help="a searched field, SPEC one of LOW:HIGH, log:LOW:HIGH, int:LOW:HIGH, choice:a,b,c; a bare name is a "
        "method param, e.g. --search temperature=log:1:16 (repeatable; adds to the config's sweep.search)",
    )
    sweep.add_argument("--trials", type=int, help="trials this process runs (default: sweep.trials, else 10)")
    sweep.add_argument("--study", help="the study's name; sweeps that name the same study and storage add trials to it")
    sweep.add_argument("--storage", help="an Optuna RDB URL (default: sqlite:///$KDLIB_HOME/studies.sqlite)")
    sweep.add_argument("--metric", help="the epoch scalar to optimize (default: val.acc)")
    sweep.add_argument("--direction", choices=["maximize", "minimize"], help="default: from the metric")
    sweep.add_argument("--pruner", choices=["median", "none"], help="default: median")
    sweep.add_argument("--seed", type=int, help="seed of the sampler")
    _home_arg(sweep)

    study = commands.add_parser("study", help="a study's trials: params, state, value, run (default: the latest)")
    study.add_argument("name", nargs="?", help="the study's name (default: the latest study in the store)")
    study.add_argument("--storage", help="read the trials of every machine from this Optuna storage instead")
    study.add_argument("--json", action="store_true", help="machine-readable output")
    _home_arg(study)

    export = commands.add_parser("export", help="write a run as Parquet tables or TensorBoard event files")
    export.add_argument("run", help="run id or its unique prefix")
    export.add_argument("--to", required=True, choices=["parquet", "tensorboard"], help="the format")
    export.add_argument("folder", metavar="DIR", help="the folder to write into (made if new)")
    _home_arg(export)

    commands.add_parser("reference", help="print the config reference (Markdown)")

    app = commands.add_parser("app", help="open the Streamlit app")
    app.add_argument("--port", type=int, default=8501)
    _home_arg(app)
    return parser


def worker_parser() -> argparse.ArgumentParser:
    """`kdlib worker RUN --home DIR`: the process kdlib.runner starts for a background run; no user command."""
    parser = argparse.ArgumentParser(prog="kdlib worker")
    parser.add_argument("run")
    _home_arg(parser)
    return parser


def cmd_run(args) -> int:
    from kdlib.config import ConfigError
    from kdlib.runner import execute, launch
    from kdlib.validation import load_config

    config = load_config(args.config, args.overrides)
    processes = _torchrun_processes()
    if processes.active:
        if args.background:
            raise ConfigError("--background: a run under torchrun trains in the foreground; drop --background")
        store = RunStore(args.home)
        run_id = processes.broadcast_object(store.create_run(config, name=args.name) if processes.is_main else None)
        return _execute_on_processes(run_id, store, processes)
    if args.background:
        from kdlib import warm

        warm.START_SERVER = False  # uses the app's or a notebook's warm worker, starts none: this process ends now
        handle = launch(config, name=args.name, home=args.home)
        print(f"started {handle.run_id} in the background; follow it with `python -m kdlib show {handle.run_id}`")
        return 0
    store = RunStore(args.home)
    run_id = store.create_run(config, name=args.name)
    print(f"run {run_id}: {config.run_name()}  (store: {store.home})")
    try:
        status = execute(run_id, store, extra_sinks=[ProgressSink(run_id)])
    except KeyboardInterrupt:  # Ctrl-C: recorded as stopped, after the last checkpoint
        print(f"\nstopped; `python -m kdlib resume {run_id}` continues it", file=sys.stderr)
        return 130
    _print_run(store, run_id)
    return 0 if status == "done" else 1


def cmd_validate(args) -> int:
    from kdlib.validation import load_config

    config = load_config(args.config, args.overrides)
    print(f"# {args.config}: valid")
    print(config.to_yaml(), end="")
    if config.sweep is not None:  # excluded from the run's own config
        import yaml

        print("# for `python -m kdlib sweep`, no part of the run:")
        print(yaml.safe_dump({"sweep": config.sweep.model_dump(exclude_defaults=True)}, sort_keys=False), end="")
    return 0


def cmd_ls(args) -> int:
    frame = RunStore(args.home).runs(None if args.all else "student")
    columns = ["id", "name", "kind", "method", "status", "epoch", "total_epochs", "test_acc"]
    if args.json:
        print(
            json.dumps([{k: clean(v) for k, v in row.items()} for row in frame[columns].to_dict("records")], indent=1)
        )
    elif frame.empty:
        print("no runs yet; start one with `python -m kdlib run configs/quickstart.yaml`")
    else:
        frame = frame.assign(
            epoch=(frame.epoch.fillna(-1) + 1).astype(int).astype(str) + "/" + frame.total_epochs.astype(str),
            test_acc=frame.test_acc.round(3),
        )
        print(frame[columns[:-2] + ["test_acc"]].rename(columns={"epoch": "epochs"}).to_string(index=False))
    return 0


def run_summary(store: RunStore, run_id: str) -> dict:
    run = store.run(run_id)
    epochs = store.epoch_metrics(run_id)
    last = {k: clean(float(v)) for k, v in epochs.iloc[-1].items()} if not epochs.empty else {}
    return {
        "id": run_id,
        "name": run["name"],
        "kind": run["kind"],
        "method": run["method"],
        "status": run["status"],
        "error": run["error"],
        "epochs_done": len(epochs),
        "total_epochs": run["total_epochs"],
        "device": run["device"],
        "folder": str(store.run_dir(run_id)),
        "final": last,
    }


def _print_run(store: RunStore, run_id: str) -> None:
    summary = run_summary(store, run_id)
    print(
        f"{summary['id']}  {summary['name']}  [{summary['status']}]  epochs {summary['epochs_done']}/{summary['total_epochs']}"
    )
    if summary["error"]:
        print(f"error: {summary['error']}")
    epochs = store.epoch_metrics(run_id)
    shown = [c for c in ("train.loss", "val.acc", "test.acc", "test.nll", "test.ece") if c in epochs.columns]
    if shown:
        print(epochs[shown].round(4).to_string())


def cmd_show(args) -> int:
    import yaml

    store = RunStore(args.home)
    run_id = resolve_run(store, args.run)
    stored = store.run(run_id)["config"]  # plain YAML: read as data, so no registry is imported
    if args.json:
        summary = run_summary(store, run_id)
        summary["epochs"] = json.loads(store.epoch_metrics(run_id).reset_index().to_json(orient="records"))
        summary["config"] = yaml.safe_load(stored)
        print(json.dumps(summary, indent=1))
    elif args.config:
        print(stored, end="")
    else:
        _print_run(store, run_id)
    return 0


def cmd_rm(args) -> int:
    store = RunStore(args.home)
    run_ids = list(dict.fromkeys(resolve_run(store, text) for text in args.runs))
    active = {run_id: status for run_id in run_ids if (status := store.run(run_id)["status"]) in ACTIVE}
    if active and not args.force:
        for run_id, status in active.items():
            print(
                f"error: {run_id} is {status}; stop it first (`python -m kdlib stop {run_id}`) or pass --force",
                file=sys.stderr,
            )
        print("nothing removed", file=sys.stderr)
        return 2
    for run_id in run_ids:
        store.delete_run(run_id)  # asks an active run to stop, then forgets it
        print(f"removed {run_id}")
    return 0


def _torchrun_processes():
    from kdlib.distributed import from_environment

    return from_environment()


def _execute_on_processes(run_id: str, store: RunStore, processes) -> int:
    """One process of a run under torchrun; the first one prints the progress and the result."""
    from kdlib.distributed import shutdown
    from kdlib.runner import execute

    if processes.is_main:
        print(f"run {run_id} on {processes.world} processes  (store: {store.home})")
    finished = False
    try:
        status = execute(
            run_id, store, extra_sinks=[ProgressSink(run_id)] if processes.is_main else [], processes=processes
        )
        finished = True
    finally:
        shutdown(finished)
    if not processes.is_main:
        return 0  # it ended without an error; the run's status is the first process's to write
    _print_run(store, run_id)
    return 0 if status == "done" else 1


def cmd_control(args) -> int:
    store = RunStore(args.home)
    run_id = resolve_run(store, args.run)
    if args.command == "resume" and (processes := _torchrun_processes()).active:
        return _execute_on_processes(run_id, store, processes)
    if reason := store.actions(run_id)[args.command]:
        print(f"error: run {run_id} cannot {args.command}: {reason} (`python -m kdlib show {run_id}`)", file=sys.stderr)
        return 2
    if args.command == "resume":
        from kdlib.runner import resume

        handle = resume(run_id, args.home, from_scratch=args.from_scratch)
        print(f"{run_id}: {handle.status}")
    else:
        store.request(run_id, args.command)
        print(f"{run_id}: asked to {args.command}")
    return 0


def cmd_worker(args) -> int:
    from kdlib.runner import execute

    return 0 if execute(args.run, RunStore(args.home)) == "done" else 1


def cmd_reference(args) -> int:
    from kdlib.reference import config_reference

    print(config_reference(), end="")
    return 0


def app_entry() -> Path | None:
    """The app's Home.py: app/ beside kdlib in a checkout, kdlib_app/app/ beside it once installed."""
    root = Path(__file__).resolve().parent.parent
    return next((p for p in (root / "app" / "Home.py", root / "kdlib_app" / "app" / "Home.py") if p.is_file()), None)


def cmd_app(args) -> int:
    import importlib.util

    if importlib.util.find_spec("streamlit") is None:
        print('error: the app needs streamlit: pip install "kdlib[app]"', file=sys.stderr)
        return 2
    if (entry := app_entry()) is None:
        print(f"error: the app's files are not beside kdlib in {Path(__file__).parent.parent}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    if args.home:  # the app's store is $KDLIB_HOME (default ./runs), as for every command
        env["KDLIB_HOME"] = str(Path(args.home).expanduser().resolve())
    # the settings of the repository's .streamlit/config.toml, which streamlit reads only from the current folder
    flags = ["--server.address", "localhost", "--server.port", str(args.port)]
    flags += ["--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal"]
    try:
        return subprocess.call([sys.executable, "-m", "streamlit", "run", str(entry), *flags], env=env)
    except KeyboardInterrupt:  # streamlit had the Ctrl-C too, and has stopped
        return 130


def _user_errors() -> tuple[type[Exception], ...]:
    """The errors printed as one line: RunNotFound, StoreError, and ConfigError once a command has imported kdlib.config
    (commands that only read the store never import it, nor pydantic)."""
    config = sys.modules.get("kdlib.config")
    return (RunNotFound, StoreError, config.ConfigError) if config else (RunNotFound, StoreError)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["worker"]:  # internal: parsed apart so that `--help` does not list it
        args = worker_parser().parse_args(argv[1:])
        args.command = "worker"
    else:
        args = build_parser().parse_args(argv)
    control = args.command in ("resume", "pause", "stop")
    handler = cmd_control if control else globals()[f"cmd_{args.command}"]  # cmd_run for run, ...
    try:
        return handler(args)
    except _user_errors() as error:  # an except clause's tuple is evaluated when an error reaches it
        print(f"error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `kdlib show RUN | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush raises nothing
        return 141


if __name__ == "__main__":
    sys.exit(main())
