"""Runs as processes: launch in the background, pause, resume, stop, and the executor behind them.

`launch(config)` registers the run in the store and starts `python -m kdlib worker RUN_ID` in a
new process session, then returns at once: forked by the warm worker (kdlib.warm, a server that has only
imported torch and kdlib, so the run skips Python's start and torch's import) where one serves this
environment, else spawned afresh; never forked from a process whose threads ran. The process reads its
config from the store and writes everything back to it, so any other process (the app, a notebook, the
CLI) follows it by reading the store. Pause and stop
are flags in the store that the run obeys at its next logged step. The worker imports the config's
`imports:` when it reads the config, so it knows the user's data sets, models and methods; an entry
defined in `__main__` (a notebook cell, a script) is refused at launch, since no worker can import it.

Whatever process runs a run (a worker, `kdlib run` in the foreground, a sweep) records itself in the
store, so readers see a run whose process ended without reporting as failed (kdlib.store.runs), and
sets its torch threads from the cores and the runs going at once (`torch_threads`).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from kdlib import warm
from kdlib.config import ConfigError, RunConfig
from kdlib.distributed import SINGLE, Processes
from kdlib.events import Sink
from kdlib.loggers import logger_sinks
from kdlib.methods import METHODS
from kdlib.registry import definition
from kdlib.store import ACTIVE, RunStore, StoreError, StoreSink
from kdlib.teachers import obtain_teacher
from kdlib.trainer import Control, StopRequested, fit
from kdlib.validation import config_from, named_entries


class StoreControl(Control):
    """Obeys the control flag a run has in the store; marks the run paused while it waits.

    `written()` returns once what the run emitted is in the store: called before the run shows as
    paused, so that nothing it logged arrives after.
    """

    def __init__(self, store: RunStore, run_id: str, poll_seconds: float = 0.2, also: tuple[str, ...] = (),
                 written: Callable[[], None] = lambda: None) -> None:
        self.store, self.run_id, self.poll_seconds, self.written = store, run_id, poll_seconds, written
        self.watched = (run_id, *also)  # a teacher trained for a student also obeys the student's flag
        self.taken: set[int] = set()  # the changes asked of the run (kdlib.tuning) that it was handed

    def _flag(self) -> str:
        flags = {self.store.control(r) for r in self.watched}
        return "stop" if "stop" in flags else "pause" if "pause" in flags else "run"

    def changes(self) -> list[dict]:
        """The changes asked of the run that it has not been handed yet: one small query, after a poll."""
        pending = [c for c in self.store.pending_changes(self.run_id) if c["id"] not in self.taken]
        self.taken.update(c["id"] for c in pending)
        return pending

    def poll(self) -> None:
        paused = False
        while (flag := self._flag()) != "run":
            if flag == "stop":
                raise StopRequested
            if not paused:
                self.written()
                self._mark("paused")
                paused = True
            time.sleep(self.poll_seconds)
        if paused:
            self._mark("running")

    def _mark(self, status: str) -> None:
        """A teacher's pause is its student's too: both rows say so, and either one resumes both."""
        for run_id in self.watched:
            self.store.update_run(run_id, status=status)


def execute(
    run_id: str,
    store: RunStore,
    extra_sinks: list[Sink] = (),
    own_sinks: list[Sink] = (),
    processes: Processes = SINGLE,
) -> str:
    """Run a registered run in this process (resuming from its checkpoint if it has one); returns its status.

    `extra_sinks` also hear the training of a teacher the run needs first (a progress bar); `own_sinks`
    hear only the run's own (a sweep's pruning). Under torchrun every process calls this with its
    `processes`; the first one alone writes to the store, obtains the teacher (training it, in one
    process, if it is new) and obeys pause and stop.
    """
    main = processes.is_main
    if main:
        store.set_process(run_id)  # this process runs it now: if it dies, readers see the run failed
    try:
        config = store.config(run_id)
    except ConfigError as error:  # a file of `imports:` gone or broken: the run must not stay queued
        if main:
            store.end_run(run_id, "failed", f"ConfigError: {error}")
        if processes.active:
            raise
        return "failed"
    if main and store.run(run_id)["status"] in ("stopped", "failed"):
        store.update_run(run_id, control="run")  # executing an ended run again resumes it

    def train(run_config: RunConfig, rid: str, teacher=None, on: Processes = SINGLE) -> None:
        if rid != run_id and on.is_main:
            store.update_run(rid, phase_of=run_id)  # the teacher's training is a phase of this run: bound controls
        loggers = logger_sinks(run_config, store.run_dir(rid), rid) if on.is_main else []  # the config's `loggers:`
        sinks = [StoreSink(store, rid), *extra_sinks, *loggers, *(own_sinks if rid == run_id else ())] if on.is_main else []
        control = (StoreControl(store, rid, also=(run_id,) if rid != run_id else (), written=sinks[0].flush)
                   if on.is_main else None)
        try:
            fit(run_config, store.run_dir(rid), sinks, teacher=teacher, control=control, processes=on)
        finally:
            try:
                for sink in sinks:
                    sink.close()
            finally:
                if on.is_main:  # its writers have stopped: no half-written file stays (nor takes a full disk's space)
                    store.discard_temporaries(rid)

    try:
        if main:
            _reserve_space(store, run_id)
            _set_torch_threads(config, store, run_id)
        teacher = None
        if METHODS.get(config.method.name).needs_teacher:
            teacher = _shared_teacher(config, store, run_id, train, processes)
        train(config, run_id, teacher, processes)
    except StopRequested:
        if main:
            store.end_run(run_id, "stopped")
    except KeyboardInterrupt:  # Ctrl-C: the user stopped it; `kdlib resume` continues it
        if main:
            store.end_run(run_id, "stopped")
        raise
    except BaseException as error:  # noqa: BLE001 - whatever happened, the run must not stay "running"
        if main:
            _record_failure(store, run_id, error)
        if processes.active:
            raise  # torchrun ends the other processes and reports which one failed
    finally:
        if main:
            store.discard_temporaries(run_id)
    return store.run(run_id)["status"]


def _record_failure(store: RunStore, run_id: str, error: BaseException) -> None:
    """Mark the run failed with its reason; a full disk is named as such, whatever write met it first."""
    store.discard_temporaries(run_id)  # the space reserve too: room to record the end on a full disk
    full = _disk_full(error)
    if full or store.run(run_id)["status"] != "failed":
        reason = f"{type(error).__name__}: {error}"
        if full:
            reason = (f"the disk holding {store.home} is full ({full}); free space there, then "
                      f"`python -m kdlib resume {run_id}` continues from the last checkpoint")
        try:
            store.end_run(run_id, "failed", reason)
        except StoreError as unrecorded:  # readers will see the process gone, and the run failed
            print(f"kdlib: run {run_id} failed ({reason}); recording it failed too: {unrecorded}", file=sys.stderr)


def _disk_full(error: BaseException | None) -> BaseException | None:
    """The error in `error`'s chain that says the disk is full (the OS's or SQLite's own), if one does."""
    while error is not None:
        if getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            return error
        if isinstance(error, StoreError) and error.kind == "full":
            return error.__cause__ or error
        error = error.__cause__ or error.__context__
    return None


# Bytes a run keeps free beside it while it trains (a file it removes on failure), so that on a disk
# that fills up the run's end can still be written: the store's write-ahead log may be what filled it.
# Recording the end takes a few pages of the log and the log's index (32 KiB) when no reader has it open.
SPACE_RESERVE = 1 << 20


def _reserve_space(store: RunStore, run_id: str) -> None:
    reserve = store.run_dir(run_id) / ".space-reserve.tmp"  # a temporary: discard_temporaries removes it
    try:
        reserve.write_bytes(bytes(min(SPACE_RESERVE, shutil.disk_usage(reserve.parent).free // 4)))
    except OSError:
        reserve.unlink(missing_ok=True)


def torch_threads(config: RunConfig, store: RunStore) -> tuple[int | None, str]:
    """The torch threads a run's process should use, and why; None leaves torch's own choice.

    The config's `threads:`, else $KDLIB_THREADS, else torch's choice where OMP_NUM_THREADS is set,
    else this machine's cores shared among the processes running runs of this store now (this one
    included): two runs on two cores get a thread each, since a second thread each only makes them
    wait for each other (and for the app, a notebook) many times over.
    """
    if threads := getattr(config, "threads", None):
        return int(threads), "the config's threads"
    if threads := os.environ.get("KDLIB_THREADS", "").strip():
        if not threads.isdigit() or int(threads) < 1:
            raise ConfigError(f"KDLIB_THREADS={threads!r}: give a whole number of threads, 1 or more")
        return int(threads), "KDLIB_THREADS"
    if os.environ.get("OMP_NUM_THREADS"):
        return None, "OMP_NUM_THREADS"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    runs = store.runs()
    going = {int(pid) for pid in runs[runs.status.isin(("queued", "running"))].pid.dropna()} | {os.getpid()}
    return max(1, cores // len(going)), f"{cores} cores shared by {len(going)} processes running runs"


def _set_torch_threads(config: RunConfig, store: RunStore, run_id: str) -> None:
    import torch

    threads, why = torch_threads(config, store)
    if threads is not None and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    store.log_event(run_id, "threads", f"{threads} torch thread{'s' if threads > 1 else ''} ({why})")


def _shared_teacher(config: RunConfig, store: RunStore, run_id: str, train, processes: Processes):
    """The teacher artifact; under torchrun the first process obtains it and the others then load it."""
    outcome, teacher = None, None
    if processes.is_main:
        store.update_run(run_id, status="running")
        store.log_event(run_id, "teacher", "looking for the teacher artifact (training it if new)")
        try:
            teacher = obtain_teacher(config, store, train, waiting=StoreControl(store, run_id).poll)
        except StopRequested:
            outcome = "stopped"
        except BaseException as error:  # noqa: BLE001 - told to the other processes, then raised
            outcome = f"{type(error).__name__}: {error}"
            processes.broadcast_object(outcome)
            raise
    outcome = processes.broadcast_object(outcome)
    if outcome == "stopped":
        raise StopRequested
    if outcome is not None:
        raise RuntimeError(f"the first process could not obtain the teacher: {outcome}")
    if teacher is None:
        teacher = obtain_teacher(config, store, train)  # in the cache by now: loaded, not trained
    return teacher


def _start_worker(run_id: str, store: RunStore) -> subprocess.Popen | warm.WarmProcess:
    """`python -m kdlib worker RUN` in a session of its own, forked by the warm worker where one serves this
    environment (no Python start nor torch import to wait for), else started afresh."""
    env, args = warm.worker_environment(), ["worker", run_id, "--home", str(store.home)]
    with open(store.run_dir(run_id) / "worker.log", "ab") as log:
        process = warm.spawn(args, env, log.fileno()) or subprocess.Popen(
            [sys.executable, "-m", "kdlib", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    store.set_process(run_id, process.pid, control="run")  # until the worker records itself, or if it dies first
    return process


class RunHandle:
    """A run in the store, seen from Python: status, live metrics, and control."""

    def __init__(self, run_id: str, store: RunStore, process: subprocess.Popen | None = None) -> None:
        self.run_id, self.store, self.process = run_id, store, process

    def __repr__(self) -> str:
        return f"RunHandle({self.run_id!r}, status={self.status!r})"

    @property
    def status(self) -> str:
        if self.process is not None and self.process.poll() is not None:
            self.process.wait()  # reap it, so the store's liveness check sees it gone
        return self.store.run(self.run_id)["status"]

    @property
    def info(self) -> dict:
        return self.store.run(self.run_id)

    def metrics(self) -> pd.DataFrame:
        return self.store.epoch_metrics(self.run_id)

    def step_metrics(self) -> pd.DataFrame:
        return self.store.step_metrics(self.run_id)

    def wait(self, timeout: float | None = None, poll: float = 0.2) -> str:
        """Block until the run is no longer queued, running or paused; returns its status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (status := self.status) in ACTIVE:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {self.run_id} is still {status} after {timeout} s")
            time.sleep(poll)
        return status

    def actions(self) -> dict[str, str | None]:
        """For each of pause, resume and stop: None if the run allows it now, else why not."""
        self.status  # noqa: B018 - reaps an ended process first, so the answer sees it gone
        return self.store.actions(self.run_id)

    def pause(self) -> bool:
        """Pause at the next logged step (a queued run pauses as it starts); False if the run has already ended
        (it may have ended an instant before), True if it was asked."""
        return self._ask("pause")

    def stop(self) -> bool:
        """Stop at the next logged step; False if the run has already ended, True if it was asked."""
        return self._ask("stop")

    def _ask(self, action: str) -> bool:
        if self.actions()[action] is not None:
            return False
        self.store.request(self.run_id, action)
        return True

    def set(self, changes: dict[str, float] | str, value: float | None = None) -> dict[str, float]:
        """Change a running or paused run from its next step: `set("method.temperature", 1.5)`, or several at once,
        `set({"temperature": 1.5, "optimizer.lr": 1e-3})` (a bare name is a method param); returns the values.

        Tunable: the method's params that take a schedule, and optimizer.lr. Every change is checked before anything
        is written (kdlib.tuning.TuningRefused names the field and the fix); the run keeps it in its config at the
        step it took effect, so that a resumed run and an exported config reproduce it (kdlib.tuning)."""
        changes = {changes: value} if isinstance(changes, str) else changes
        self.status  # noqa: B018 - reaps an ended process first, so the check sees it gone
        return self.store.request_changes(self.run_id, {k if "." in k else f"method.{k}": v for k, v in changes.items()})

    def resume(self, from_scratch: bool = False) -> None:
        """Continue a paused run, or restart a stopped or failed one from its last checkpoint.

        A run whose checkpoint is gone is refused (StoreError) unless `from_scratch`: then it trains
        again from epoch 0. A teacher stopped with the student it trained for resumes that student,
        which continues the teacher first. ControlRefused says why a run cannot resume (done, a sweep's
        recorded trial)."""
        status = self.status
        self.store.refuse_unless_allowed(self.run_id, "resume")
        if status == "paused":
            self.store.request(self.run_id, "resume")
        elif (student := self.store.phase_parent(self.run_id)) and self.store.run(student)["status"] in (
                "stopped", "failed") and not from_scratch:
            RunHandle(student, self.store).resume()  # the student's worker continues this teacher first
        else:
            checkpoint = self.store.run_dir(self.run_id) / "checkpoint.pt"
            saved = self.info["checkpoint_epoch"]
            if from_scratch:
                checkpoint.unlink(missing_ok=True)
            elif saved is not None and not checkpoint.exists():
                raise StoreError(
                    f"run {self.run_id} has no checkpoint: {checkpoint} (its state after {saved + 1} epochs) is gone, "
                    f"so it cannot continue where it stopped. `python -m kdlib resume {self.run_id} --from-scratch` trains it "
                    "again from epoch 0"
                )
            # queued and this process's, in one write: the dead process recorded before is not checked again
            self.store.set_process(self.run_id, status="queued", error=None, **({"epoch": None} if from_scratch else {}))
            self.process = _start_worker(self.run_id, self.store)


def launch(
    config: RunConfig | dict | str | Path,
    name: str | None = None,
    home: str | Path | None = None,
    overrides: list[str] = (),
) -> RunHandle:
    """Validate the config, register the run, start it in its own process; returns at once."""
    config = config_from(config, overrides)
    stranded = [definition(e) for e in named_entries(config) if getattr(e, "__wrapped__", e).__module__ == "__main__"]
    if stranded:
        raise ConfigError(
            f"{' and '.join(stranded)}: defined in __main__ (a notebook or a script), which a background run cannot "
            "import; move it into a file and list that file under the config's `imports:`"
        )
    store = RunStore(home)
    run_id = store.create_run(config, name=name)
    return RunHandle(run_id, store, _start_worker(run_id, store))


def resume(run_id: str, home: str | Path | None = None, from_scratch: bool = False) -> RunHandle:
    """Continue a run (see RunHandle.resume); `from_scratch` trains it again from epoch 0."""
    handle = RunHandle(run_id, RunStore(home))
    handle.resume(from_scratch)
    return handle
