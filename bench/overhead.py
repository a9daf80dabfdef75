"""kdlib's KD epoch against a plain hand-written PyTorch loop doing the same work.

Same data (in memory), same student, same frozen teacher forwarded every step, batch size and
optimizer (Adam); both evaluate the validation and test splits after each epoch. kdlib also
records per-sample values (and the gradient probe, test probabilities and reliability table),
writes them and the scalars to the SQLite store and saves an atomic checkpoint every epoch: that
is the overhead measured. The two are timed side by side in one process, interleaved (one kdlib
run, one hand run, repeated); each repeat gives the ratio of their median epoch times, and the
result is the median of these paired ratios, so that a stretch of time when the machine is slow
weighs on both sides of one ratio rather than on one side of the comparison. The first epoch of
each run is left out (warm-up). Two settings:
- images: a CIFAR-shaped synthetic set (4,900 training images 3x32x32, `bench/images.py`), a 2-D
  CNN student (cnn2d [16, 32]) and a CIFAR ResNet-8 teacher: the kind of work KD is used for;
- mnist1d: 4,200 training samples of 40 values, an MLP-128 student and a 1-D CNN teacher: an epoch
  of ~80 ms in ~2 ms steps, where kdlib's fixed costs per step and per epoch weigh the most.

    .venv/bin/python bench/overhead.py [--repeats 5] [--epochs 4] [--settings images mnist1d]

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

from settings import COMMON, SETTINGS  # noqa: E402

from kdlib.config import validate_config  # noqa: E402
from kdlib.data import load_data  # noqa: E402
from kdlib.events import EpochEnded  # noqa: E402
from kdlib.models import build_model  # noqa: E402
from kdlib.store import RunStore, StoreSink  # noqa: E402
from kdlib.trainer import fit  # noqa: E402


def setting_config(name: str, epochs: int):
    setting = SETTINGS[name]
    # the hand loop forwards the teacher every step, so kdlib does too (no teacher-output cache)
    teacher = {**setting["teacher"], "cache": {"enabled": False}}
    return validate_config({**COMMON, **setting, "teacher": teacher, "epochs": epochs})


class EpochClock:
    """A sink that notes when each epoch ends."""

    def __init__(self) -> None:
        self.times = [time.perf_counter()]

    def emit(self, event) -> None:
        if isinstance(event, EpochEnded):
            self.times.append(time.perf_counter())

    def close(self) -> None:
        pass

    def epoch_times(self) -> list[float]:
        return [b - a for a, b in zip(self.times[1:], self.times[2:], strict=False)]  # the first epoch is warm-up


def kdlib_epochs(config, store: RunStore, teacher) -> list[float]:
    run_id = store.create_run(config)
    clock = EpochClock()
    sink = StoreSink(store, run_id)
    fit(config, store.run_dir(run_id), [sink, clock], teacher=teacher)
    sink.close()
    return clock.epoch_times()


def hand_epochs(config, data, teacher) -> list[float]:
    torch.manual_seed(config.seed)
    student = build_model(config.student, data.input_shape, data.num_classes)
    optimizer = torch.optim.Adam(student.parameters(), lr=config.optimizer.lr)
    x, y, temperature = data.train.x, data.train.y, 4.0
    times = [time.perf_counter()]
    generator = torch.Generator().manual_seed(0)
    for _ in range(config.epochs):
        student.train()
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), config.batch_size):
            rows = order[start : start + config.batch_size]
            with torch.no_grad():
                teacher_logits = teacher(x[rows])
            logits = student(x[rows])
            soft = F.kl_div(
                F.log_softmax(logits / temperature, 1),
                F.log_softmax(teacher_logits / temperature, 1),
                reduction="batchmean",
                log_target=True,
            )
            loss = 0.1 * F.cross_entropy(logits, y[rows]) + 0.9 * temperature**2 * soft
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        student.eval()
        with torch.no_grad():
            for split in (data.val, data.test):
                (student(split.x).argmax(1) == split.y).float().mean().item()
        times.append(time.perf_counter())
    return [b - a for a, b in zip(times[1:-1], times[2:], strict=False)]


def bench(name: str, store: RunStore, repeats: int, epochs: int) -> float:
    config = setting_config(name, epochs)
    data = load_data(config.data)
    teacher = build_model(config.teacher.model, data.input_shape, data.num_classes).eval().requires_grad_(False)
    ratios, epochs_each = [], 0
    for repeat in range(repeats):
        ours = kdlib_epochs(config, store, teacher)
        theirs = hand_epochs(config, data, teacher)
        ratios.append(statistics.median(ours) / statistics.median(theirs))
        epochs_each += len(ours)
        print(
            f"{name} repeat {repeat}: kdlib {statistics.median(ours) * 1e3:.1f} ms/epoch, "
            f"hand {statistics.median(theirs) * 1e3:.1f} ms/epoch, ratio {ratios[-1]:.3f}",
            flush=True,
        )
    print(f"{name}: {epochs_each} epochs each, {len(data.train)} training samples, batch {config.batch_size}; "
          f"ratios {min(ratios):.3f} to {max(ratios):.3f}, median {statistics.median(ratios):.3f}")
    return statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        store = RunStore(home)
        ratios = {name: bench(name, store, args.repeats, args.epochs) for name in args.settings}
    print(f"threads {torch.get_num_threads()}")
    for name, ratio in ratios.items():
        print(f"overhead_ratio_{name} {ratio:.3f}")
    print(f"overhead_ratio {max(ratios.values()):.3f}")


if __name__ == "__main__":
    main()
