"""kdlib's KD epoch against a plain hand-written PyTorch loop doing the same work.

Same data (in memory), same student, same frozen teacher forwarded every step, batch size and
optimizer (Adam); both evaluate the validation and test splits after each epoch. kdlib also
records per-sample values (and the gradient probe, test probabilities and reliability table),
writes them and the scalars to the SQLite store and saves an atomic checkpoint every epoch: that
is the overhead measured.

The two take turns epoch by epoch in one process: a kdlib run trains an epoch, then the hand loop
trains one of its own, then kdlib the next, and so on (the hand loop runs inside kdlib's pause point
at the end of each epoch, its time not counted as kdlib's). Each kdlib epoch is paired with the
hand epoch right after it, so a stretch of time when the machine is slow weighs on both sides of
one ratio; the result is the median of these paired ratios. A kdlib epoch ends once everything it
started is done: its store writes and its checkpoint are waited for, so no work of kdlib's spills
into the hand loop's time (kdlib is charged the whole of it, including what overlaps training in a
normal run). The first epoch of each run is left out (warm-up). Two settings:
- images: a CIFAR-shaped synthetic set (4,900 training images 3x32x32, `bench/images.py`), a 2-D
  CNN student (cnn2d [16, 32]) and a CIFAR ResNet-8 teacher: the kind of work KD is used for;
- mnist1d: 4,200 training samples of 40 values, an MLP-128 student and a 1-D CNN teacher: an epoch
  of ~70 ms in ~2 ms steps, where kdlib's fixed costs per step and per epoch weigh the most.

    .venv/bin/python bench/overhead.py [--runs 4] [--epochs 11] [--settings images mnist1d] [--quick]

`--quick` (a check that it works, in seconds; `tests/test_bench.py`): one run of 3 epochs per setting
(2 epoch pairs timed), on 300 samples each (`settings.QUICK_SAMPLES`); its ratios mean nothing.

Last lines: `overhead_ratio_<setting> <number>` for each setting, then `overhead_ratio <number>`,
the worse of them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from settings import COMMON, QUICK_SAMPLES, SETTINGS, settings  # noqa: E402
from timing import parse_args  # noqa: E402

from kdlib import trainer  # noqa: E402
from kdlib.data import load_data  # noqa: E402
from kdlib.events import EpochEnded  # noqa: E402
from kdlib.models import build_model  # noqa: E402
from kdlib.store import RunStore, StoreSink  # noqa: E402
from kdlib.validation import validate_config  # noqa: E402


def setting_config(name: str, epochs: int, quick: bool = False):
    setting = settings(quick)[name]
    # the hand loop forwards the teacher every step, so kdlib does too (no teacher-output cache)
    teacher = {**setting["teacher"], "cache": {"enabled": False}}
    return validate_config({**COMMON, **setting, "teacher": teacher, "epochs": epochs})


class HandLoop:
    """The plain PyTorch loop, one epoch per call: KD loss, Adam, then accuracy on val and test."""

    def __init__(self, config, data, teacher) -> None:
        torch.manual_seed(config.seed)
        self.student = build_model(config.student, data.input_shape, data.num_classes)
        self.optimizer = torch.optim.Adam(self.student.parameters(), lr=config.optimizer.lr)
        self.config, self.data, self.teacher = config, data, teacher
        self.generator = torch.Generator().manual_seed(0)

    def epoch(self) -> float:
        """Train one epoch and evaluate; returns its duration in seconds."""
        start = time.perf_counter()
        x, y, temperature, data = self.data.train.x, self.data.train.y, 4.0, self.data
        self.student.train()
        order = torch.randperm(len(y), generator=self.generator)
        for first in range(0, len(y), self.config.batch_size):
            rows = order[first : first + self.config.batch_size]
            with torch.no_grad():
                teacher_logits = self.teacher(x[rows])
            logits = self.student(x[rows])
            soft = F.kl_div(
                F.log_softmax(logits / temperature, 1),
                F.log_softmax(teacher_logits / temperature, 1),
                reduction="batchmean",
                log_target=True,
            )
            loss = 0.1 * F.cross_entropy(logits, y[rows]) + 0.9 * temperature**2 * soft
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        self.student.eval()
        with torch.no_grad():
            for split in (data.val, data.test):
                (self.student(split.x).argmax(1) == split.y).float().mean().item()
        return time.perf_counter() - start


class TakeTurns(trainer.Control):
    """Heard by a kdlib run as a sink and asked as its control: at the end of each kdlib epoch (its
    pause point, after the checkpoint), notes the epoch's time, then trains one hand epoch."""

    def __init__(self, hand: HandLoop) -> None:
        self.hand, self.ended, self.started = hand, False, time.perf_counter()
        self.pairs: list[tuple[float, float]] = []  # (kdlib epoch, the hand epoch after it), seconds

    def emit(self, event) -> None:
        self.ended = self.ended or isinstance(event, EpochEnded)

    def close(self) -> None:
        pass

    def poll(self) -> None:
        if not self.ended:  # a pause point within the epoch
            return
        ours = time.perf_counter() - self.started
        self.pairs.append((ours, self.hand.epoch()))
        self.ended, self.started = False, time.perf_counter()


class WaitedCheckpointer(trainer.Checkpointer):
    """The trainer's checkpointer, waited for before the epoch counts as done (its time is kdlib's)."""

    def save(self, epoch, state, path) -> None:
        super().save(epoch, state, path)
        self.wait()


def paired_epochs(config, store: RunStore, data, teacher) -> list[tuple[float, float]]:
    """One kdlib run and a hand loop taking turns; the (kdlib, hand) epoch times after the first."""
    run_id = store.create_run(config)
    turns, sink = TakeTurns(HandLoop(config, data, teacher)), StoreSink(store, run_id)
    original, trainer.Checkpointer = trainer.Checkpointer, WaitedCheckpointer
    try:
        trainer.fit(config, store.run_dir(run_id), [sink, turns], teacher=teacher, control=turns)
    finally:
        trainer.Checkpointer = original
        sink.close()
    return turns.pairs[1:]


def bench(name: str, store: RunStore, runs: int, epochs: int, quick: bool) -> float:
    config = setting_config(name, epochs, quick)
    data = load_data(config.data)
    teacher = build_model(config.teacher.model, data.input_shape, data.num_classes).eval().requires_grad_(False)
    ratios = []
    for run in range(runs):
        pairs = paired_epochs(config, store, data, teacher)
        ratios += [ours / theirs for ours, theirs in pairs]
        print(
            f"{name} run {run}: kdlib {statistics.median(o for o, _ in pairs) * 1e3:.1f} ms/epoch, "
            f"hand {statistics.median(t for _, t in pairs) * 1e3:.1f} ms/epoch, "
            f"median ratio {statistics.median(o / t for o, t in pairs):.3f}",
            flush=True,
        )
    quartiles = statistics.quantiles(ratios, n=4)
    print(f"{name}: {len(ratios)} epoch pairs, {len(data.train)} training samples, batch {config.batch_size}; "
          f"ratios {min(ratios):.3f} to {max(ratios):.3f}, quartiles {quartiles[0]:.3f} / {quartiles[1]:.3f} / "
          f"{quartiles[2]:.3f}")
    return statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=11)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = parse_args(parser, {"runs": 1, "epochs": 3}, f"{QUICK_SAMPLES} samples per setting")
    with tempfile.TemporaryDirectory() as home:
        store = RunStore(home)
        ratios = {name: bench(name, store, args.runs, args.epochs, args.quick) for name in args.settings}
    print(f"threads {torch.get_num_threads()}")
    for name, ratio in ratios.items():
        print(f"overhead_ratio_{name} {ratio:.3f}")
    print(f"overhead_ratio {max(ratios.values()):.3f}")


if __name__ == "__main__":
    main()
