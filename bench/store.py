"""The store at CIFAR size: what a 50,000-sample, 100-class run records per sample over 200 epochs.

Every epoch the store's writer gets what a KD run on CIFAR-100 records: per training sample eight
float arrays and the label (50,000 each), per test sample p_true, predicted, confidence and label
(10,000 each), 39 logged steps and the epoch's scalars; every `--stride` epochs also the full class
probabilities of both splits ([50000, 100] and [10000, 100]). All of it goes through the real path:
StoreSink events, arrays cast to float16, written into one file per epoch under a temporary name,
renamed, registered.

Write time per epoch: from handing the epoch's events to the writer until `flush()` returns.
Trajectory read: one sample's `p_true_student` over every epoch, from a fresh RunStore, with every
file of the store dropped from the OS page cache before each read (`posix_fadvise(DONTNEED)` after
one `sync`), so each of the 200 small reads goes to the disk; beside it the same read done without
the registry (list the epoch files, read each one's index, map it).

    .venv/bin/python bench/store.py [--epochs 200] [--stride 10] [--reads 15] [--keep DIR] [--quick]

`--quick` (a check that it works, in seconds; `tests/test_bench.py`): 3 epochs at the same size,
probabilities every 2, 3 samples read; its times mean little.

Last line: `trajectory_read_ms <median cold read of one sample's trajectory over all epochs>`.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from timing import parse_args  # noqa: E402

from kdlib.events import CheckpointSaved, EpochEnded, RunStarted, StepLogged  # noqa: E402
from kdlib.store import RunStore, StoreSink, read_epoch_index  # noqa: E402
from kdlib.validation import validate_config  # noqa: E402

TRAIN, TEST, CLASSES, STEPS = 50_000, 10_000, 100, 391  # CIFAR-100 at batch 128
TRAIN_KEYS = ["p_true_student", "p_true_teacher", "loss_per_sample", "kl", "weight", "logit_grad_norm",
              "logit_grad_ratio", "logit_grad_ratio_true"]  # fmt: skip


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


class FakeRun:
    """A run's per-epoch arrays: fixed random values shifted by the epoch, so every epoch differs."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.train = {k: rng.random(TRAIN, dtype=np.float32) for k in TRAIN_KEYS}
        self.test = {k: rng.random(TEST, dtype=np.float32) for k in ("p_true", "confidence")}
        self.train_labels, self.test_labels = rng.integers(0, CLASSES, TRAIN), rng.integers(0, CLASSES, TEST)
        self.train_probs = softmax(rng.normal(size=(TRAIN, CLASSES)).astype(np.float32))
        self.test_probs = softmax(rng.normal(size=(TEST, CLASSES)).astype(np.float32))

    def value(self, key: str, epoch: int) -> np.ndarray:
        return self.train[key] + np.float32(epoch / 1000)

    def arrays(self, epoch: int, with_probs: bool) -> dict[str, np.ndarray]:
        arrays = {f"train.{k}": self.value(k, epoch) for k in TRAIN_KEYS}
        arrays["train.label"] = self.train_labels
        arrays |= {f"test.{k}": v + np.float32(epoch / 1000) for k, v in self.test.items()}
        arrays |= {"test.predicted": (self.test_labels + epoch) % CLASSES, "test.label": self.test_labels}
        if with_probs:
            arrays["train.probs"] = np.roll(self.train_probs, epoch, axis=1)
            arrays["test.probs"] = np.roll(self.test_probs, epoch, axis=1)
        return arrays


def write_run(store: RunStore, run: FakeRun, epochs: int, stride: int) -> tuple[str, list[float], list[float]]:
    config = validate_config(
        {"data": {"name": "toy2d"}, "student": {"name": "mlp"}, "method": {"name": "ce"}, "epochs": epochs}
    )
    run_id = store.create_run(config, name="bench-store")
    sink = StoreSink(store, run_id)
    sink.emit(RunStarted(epochs, 0, STEPS, "cpu", TRAIN))
    plain, strided = [], []
    for epoch in range(epochs):
        with_probs = (epoch + 1) % stride == 0 or epoch + 1 == epochs
        arrays = run.arrays(epoch, with_probs)
        start = time.perf_counter()
        for step in range(10, STEPS + 1, 10):
            sink.emit(StepLogged(epoch, epoch * STEPS + step, {"train.loss": 1.0, "lr": 0.05}))
        scalars = {f"{split}.{k}": 0.5 for split in ("train", "test") for k in ("loss", "acc", "nll", "ece")}
        sink.emit(EpochEnded(epoch, (epoch + 1) * STEPS, scalars, arrays))
        sink.emit(CheckpointSaved(epoch, "checkpoint.pt"))
        sink.flush()
        (strided if with_probs else plain).append(time.perf_counter() - start)
    sink.close()
    return run_id, plain, strided


def drop_from_page_cache(folder: Path) -> None:
    """Evict every file under `folder` from the page cache (clean pages only: `sync` first)."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)


def trajectory_by_files(store: RunStore, run_id: str, key: str, index: int) -> list[float]:
    """The read without the registry: list the epoch files, read each one's index, map it."""
    values = []
    for path in sorted(store.samples_dir(run_id).glob("epoch_*.safetensors")):
        found = {name: (dtype, shape, offset) for name, dtype, shape, offset in read_epoch_index(path)}
        dtype, shape, offset = found[f"train.{key}"]
        values.append(float(np.memmap(path, dtype, mode="r", offset=offset, shape=(int(shape.split(",")[0]),))[index]))
    return values


def timed_reads(read, home: Path, indices: list[int], cold: bool) -> list[float]:
    times = []
    for index in indices:
        if cold:
            drop_from_page_cache(home)
        start = time.perf_counter()
        read(index)
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--stride", type=int, default=10, help="full probabilities every k epochs")
    parser.add_argument("--reads", type=int, default=15, help="samples read, at random")
    parser.add_argument("--keep", type=Path, help="write the store here and keep it (default: a temporary folder)")
    args = parse_args(parser, {"epochs": 3, "stride": 2, "reads": 3})
    home = args.keep or Path(tempfile.mkdtemp(prefix="kdlib-bench-store-"))
    try:
        run = FakeRun()
        store = RunStore(home)
        start = time.perf_counter()
        run_id, plain, strided = write_run(store, run, args.epochs, args.stride)
        total = time.perf_counter() - start
        os.sync()
        sizes = {p: p.stat().st_size for p in home.rglob("*") if p.is_file()}
        with sqlite3.connect(store.path) as db:  # the probabilities' bytes, from the registry's shapes
            shapes = [shape for (shape,) in db.execute("SELECT shape FROM samples WHERE key = 'probs'")]
        probs = sum(2 * math.prod(int(n) for n in shape.split(",")) for shape in shapes)  # float16
        print(f"{args.epochs} epochs of {TRAIN} training and {TEST} test samples, {CLASSES} classes, probabilities every "
              f"{args.stride} epochs ({len(strided)} epochs); written in {total:.1f} s")  # fmt: skip
        print(f"write ms per epoch (median): {statistics.median(plain) * 1000:.1f} without probabilities, "
              f"{statistics.median(strided) * 1000:.1f} with them; all epochs {statistics.median(plain + strided) * 1000:.1f}")  # fmt: skip
        print(f"on disk: {sum(sizes.values()) / 1e6:.1f} MB in {len(sizes)} files, {sum(sizes.values()) / 1e6 / args.epochs:.2f} MB "
              f"per epoch ({(sum(sizes.values()) - probs) / 1e6 / args.epochs:.2f} MB without the probabilities)")  # fmt: skip

        indices = np.random.default_rng(1).integers(0, TRAIN, args.reads).tolist()
        fresh = RunStore(home)
        expected = [float(np.float16(run.value("p_true_student", e)[indices[0]])) for e in range(args.epochs)]
        assert fresh.trajectory(run_id, "p_true_student", indices[0]).tolist() == expected, "wrong values read"

        def read(index):
            return RunStore(home).trajectory(run_id, "p_true_student", index)

        def read_probs(index):
            return RunStore(home).trajectory(run_id, "probs", index, split="train")

        cold = timed_reads(read, home, indices, cold=True)
        warm = timed_reads(read, home, indices, cold=False)
        old = timed_reads(lambda i: trajectory_by_files(fresh, run_id, "p_true_student", i), home, indices, True)
        probs_cold = timed_reads(read_probs, home, indices, cold=True)
        median = statistics.median
        print(f"one sample's p_true_student over {args.epochs} epochs, median of {args.reads} samples, fresh RunStore: "
              f"{median(cold):.1f} ms cold (page cache dropped; max {max(cold):.1f}), {median(warm):.1f} ms warm")  # fmt: skip
        print(f"the same read without the registry (list the epoch files, read each index, map), cold: {median(old):.1f} ms "
              f"({median(old) / median(cold):.1f}x the registry's)")  # fmt: skip
        print(f"one sample's probabilities [{len(strided)} epochs, {CLASSES}], cold: {median(probs_cold):.1f} ms")
        print(f"trajectory_read_ms {median(cold):.2f}")
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
