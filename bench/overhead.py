"""kdlib's KD epoch against a plain hand-written PyTorch loop doing the same work.

Same data (mnist1d, in memory), same student (MLP 128), same frozen teacher (cnn1d), batch size,
optimizer (Adam) and teacher forward; both evaluate the validation and test splits after each
epoch. kdlib also records per-sample values, writes them and the scalars to the SQLite store and
saves an atomic checkpoint every epoch: that is the overhead measured. The two are timed side by
side in one process, interleaved (one kdlib run, one hand run, repeated), and compared by the
median epoch time. The first epoch of each run is left out (warm-up).

    .venv/bin/python bench/overhead.py [--repeats 5] [--epochs 4]

Last line: `overhead_ratio <kdlib epoch time / hand epoch time>`.
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

from kdlib.config import validate_config  # noqa: E402
from kdlib.data import load_data  # noqa: E402
from kdlib.events import EpochEnded  # noqa: E402
from kdlib.models import build_model  # noqa: E402
from kdlib.store import RunStore, StoreSink  # noqa: E402
from kdlib.trainer import fit  # noqa: E402

CONFIG = {
    "data": {"name": "mnist1d", "n_samples": 6000},
    "student": {"name": "mlp", "hidden": [128]},
    # the hand loop forwards the teacher every step, so kdlib does too (no teacher-output cache)
    "teacher": {"model": {"name": "cnn1d"}, "epochs": 1, "cache": {"enabled": False}},
    "method": {"name": "kd", "temperature": 4.0, "w_ce": 0.1, "w_kd": 0.9},
    "batch_size": 128,
    "optimizer": {"name": "adam", "lr": 0.003},
    "lr_schedule": {"name": "constant"},
    "device": "cpu",
}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    config = validate_config({**CONFIG, "epochs": args.epochs})
    data = load_data(config.data)
    teacher = build_model(config.teacher.model, data.input_shape, data.num_classes).eval().requires_grad_(False)
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as home:
        store = RunStore(home)
        for repeat in range(args.repeats):
            ours += kdlib_epochs(config, store, teacher)
            theirs += hand_epochs(config, data, teacher)
            print(
                f"repeat {repeat}: kdlib {statistics.median(ours) * 1e3:.1f} ms/epoch, "
                f"hand {statistics.median(theirs) * 1e3:.1f} ms/epoch",
                flush=True,
            )
    ratio = statistics.median(ours) / statistics.median(theirs)
    print(
        f"threads {torch.get_num_threads()}, {len(ours)} epochs each, {len(data.train)} training samples, "
        f"batch {config.batch_size}"
    )
    print(f"overhead_ratio {ratio:.3f}")


if __name__ == "__main__":
    main()
