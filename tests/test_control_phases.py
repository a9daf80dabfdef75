"""Pause, resume and stop in every phase of a run: its teacher's training, a wait for a teacher another
run trains, DFA's search, a sweep's trial; and an action a run cannot take now is refused with the reason."""

from __future__ import annotations

import fcntl
import threading
import time

import pytest

from kdlib.config import stable_hash
from kdlib.events import EpochEnded, StepLogged
from kdlib.runner import RunHandle, execute
from kdlib.store import ControlRefused, RunStore
from kdlib.sweep import base_data, open_study, parse_search, run_trial, sweep_section
from kdlib.teachers import teacher_key


class ActOnce:
    """A sink that asks run `run_id` for `action` once, at the first event `when(event)` accepts."""

    def __init__(self, store: RunStore, run_id: str, action: str, when) -> None:
        self.store, self.run_id, self.action, self.when, self.done = store, run_id, action, when, False

    def emit(self, event) -> None:
        if not self.done and self.when(event):
            self.done = True
            self.store.request(self.run_id, self.action)

    def close(self) -> None:
        pass


def first_epoch(event) -> bool:
    return isinstance(event, EpochEnded)


def eventually(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def in_thread(*args, **kwargs) -> threading.Thread:
    thread = threading.Thread(target=execute, args=args, kwargs=kwargs, daemon=True)
    thread.start()
    return thread


def teacher_rows(store: RunStore) -> list[str]:
    return store.runs("teacher").id.tolist()


def test_a_student_paused_while_its_teacher_trains_shows_paused_on_both_rows_and_resumes_from_either(tiny):
    store = RunStore()
    run_id = store.create_run(tiny(teacher__epochs=6))
    thread = in_thread(run_id, store, [ActOnce(store, run_id, "pause", first_epoch)])
    eventually(lambda: store.run(run_id)["status"] == "paused")
    [teacher] = teacher_rows(store)
    assert store.run(teacher)["status"] == "paused"
    assert store.actions(run_id)["resume"] is None and store.actions(teacher)["resume"] is None
    assert store.actions(run_id)["pause"] == "it is paused"
    RunHandle(teacher, store).resume()  # from the teacher's row: both go on
    thread.join(120)
    assert store.run(run_id)["status"] == "done" and store.run(teacher)["status"] == "done"
    assert teacher_rows(store) == [teacher]


def test_a_student_stopped_while_its_teacher_trains_continues_that_teacher_when_resumed(tiny):
    store = RunStore()
    run_id = store.create_run(tiny(teacher__epochs=4))
    assert execute(run_id, store, [ActOnce(store, run_id, "stop", first_epoch)]) == "stopped"
    [teacher] = teacher_rows(store)
    assert store.run(teacher)["status"] == "stopped" and store.run(teacher)["checkpoint_epoch"] == 0
    assert execute(run_id, store) == "done"
    assert teacher_rows(store) == [teacher]  # no second teacher run beside an orphan
    assert store.run(teacher)["status"] == "done"
    assert store.epoch_metrics(teacher).index.tolist() == [0, 1, 2, 3]
    assert "resumed" in store.events(teacher).kind.tolist()


@pytest.mark.slow
def test_resuming_a_teacher_stopped_with_its_student_resumes_the_student(tiny):
    store = RunStore()
    run_id = store.create_run(tiny(teacher__epochs=4))
    execute(run_id, store, [ActOnce(store, run_id, "stop", first_epoch)])
    [teacher] = teacher_rows(store)
    RunHandle(teacher, store).resume()
    assert RunHandle(run_id, store).wait(timeout=120) == "done"
    assert store.run(teacher)["status"] == "done" and teacher_rows(store) == [teacher]


def test_a_run_waiting_for_a_teacher_another_run_trains_can_be_stopped(tiny):
    store = RunStore()
    config = tiny()
    run_id = store.create_run(config)
    lock_path = store.home / "teachers" / (stable_hash(teacher_key(config)) + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as another run training this teacher would hold it
        thread = in_thread(run_id, store)
        eventually(lambda: store.run(run_id)["status"] == "running")
        RunHandle(run_id, store).pause()
        eventually(lambda: store.run(run_id)["status"] == "paused")
        RunHandle(run_id, store).stop()
        thread.join(30)
    assert not thread.is_alive() and store.run(run_id)["status"] == "stopped"


def dfa_config(tiny, **changes):
    return tiny(method={"name": "dfa", "search_steps": 100_000, "search_log_every": 1, **changes},
                student__hidden=[8, 8], teacher__model__hidden=[16, 16, 16, 16])


def test_dfa_search_obeys_pause_and_stop(tiny):
    store = RunStore()
    run_id = store.create_run(dfa_config(tiny))
    searching = ActOnce(store, run_id, "pause", lambda e: isinstance(e, StepLogged) and e.epoch == -1 and e.step > 0)
    thread = in_thread(run_id, store, [searching])
    eventually(lambda: store.run(run_id)["status"] == "paused")
    logged = len(store.metrics(run_id))
    time.sleep(0.5)
    assert len(store.metrics(run_id)) == logged  # the search waits
    RunHandle(run_id, store).stop()
    thread.join(30)
    assert not thread.is_alive() and store.run(run_id)["status"] == "stopped"


class ActOnTrial(ActOnce):
    """ActOnce on the newest student run: the trial that is training."""

    def emit(self, event) -> None:
        self.run_id = self.store.runs("student").id.iloc[0]
        super().emit(event)


def test_a_sweep_trial_pauses_and_resumes_and_a_stopped_trial_says_why_it_cannot_resume(tiny):
    store = RunStore()
    config = tiny(teacher__epochs=1)
    section = sweep_section(config, search={"temperature": "1.0:4.0"}, trials=2, study="controlled")
    study, base = open_study(section, store), base_data(config)
    space = parse_search(section.search, base)
    results = []
    thread = threading.Thread(daemon=True, target=lambda: results.append(
        run_trial(study, space, base, store, section.metric, [ActOnTrial(store, "", "pause", first_epoch)])))
    thread.start()
    eventually(lambda: len(store.runs("student")) > 0 and store.runs("student").status.iloc[0] == "paused")
    RunHandle(store.runs("student").id.iloc[0], store).resume()
    thread.join(120)
    assert results[0].state == "complete"

    stopped = run_trial(study, space, base, store, section.metric, [ActOnTrial(store, "", "stop", first_epoch)])
    assert (stopped.state, stopped.error) == ("failed", "stopped from outside the sweep")
    reason = store.actions(stopped.run_id)["resume"]
    assert "trial 1 of the sweep 'controlled'" in reason and "run the sweep again" in reason
    with pytest.raises(ControlRefused, match="cannot resume"):
        RunHandle(stopped.run_id, store).resume()


def test_what_a_run_allows_now(tiny):
    store = RunStore()
    run_id = store.create_run(tiny())
    assert store.actions(run_id) == {"pause": None, "resume": "it has not started yet", "stop": None}
    store.end_run(run_id, "done")
    assert store.actions(run_id) == {"pause": "it has ended (done)", "resume": "it is done",
                                     "stop": "it has ended (done)"}
    assert RunHandle(run_id, store).stop() is False  # it ended first: nothing to ask, no error
    store.end_run(run_id, "failed", "boom")
    assert store.actions(run_id)["resume"] is None
