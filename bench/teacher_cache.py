"""Epoch time of KD with the teacher-output cache, KD without it, and plain CE, side by side.

Two settings, each with a teacher artifact trained once (one epoch: its accuracy does not matter
for timing) and its output cache computed once (a one-off cost, printed apart):
- mnist1d: 6,000 samples in memory, MLP-128 student, 1-D CNN teacher;
- images: a CIFAR-shaped synthetic set (3x32x32 tensors in memory, 10 classes given by a fixed
  random linear rule on the 8x8 coarse image, plus fine noise), a small 2-D CNN student
  (cnn2d [16, 32]) and a CIFAR ResNet-8 teacher.
The three runs of a setting are interleaved (CE, KD cached, KD uncached, repeated) in one process;
each repeat gives the ratio of KD cached's median epoch time to CE's, and `cache_ratio` is the
median of these paired ratios (a slow stretch of the machine then weighs on both sides of a ratio).
The first epoch of each run is left out (warm-up, and the cache's loading). The route probe is off in every run: it is a probe, not training. Beside them,
KD's loss alone (its forward and backward per step, on fixed logits) is timed
against CE's: the part of KD's cost that no cache removes, and so the best ratio a cache can reach.

    .venv/bin/python bench/teacher_cache.py [--repeats 4] [--epochs 4] [--threads 1] [--settings mnist1d images] [--quick]

`--quick` (a check that it works, in seconds; `tests/test_bench.py`): one repeat of 3 epochs per run
(2 timed), on 300 samples per setting (`settings.QUICK_SAMPLES`), KD's loss timed over a few calls;
its ratios mean nothing.

Last line: `cache_ratio <KD with the cache / CE>`, the worse of the two settings (named above it).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from settings import COMMON, QUICK_SAMPLES, SETTINGS, settings  # noqa: E402
from timing import parse_args  # noqa: E402

from kdlib.data import Batch, load_data  # noqa: E402
from kdlib.events import EpochEnded  # noqa: E402
from kdlib.methods.ce import CrossEntropy  # noqa: E402
from kdlib.methods.kd import kd_step  # noqa: E402
from kdlib.schedules import as_schedule  # noqa: E402
from kdlib.store import RunStore, StoreSink  # noqa: E402
from kdlib.teacher_cache import attach_teacher  # noqa: E402
from kdlib.teachers import obtain_teacher  # noqa: E402
from kdlib.trainer import fit  # noqa: E402
from kdlib.validation import validate_config  # noqa: E402


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
    """A run's epoch times after the first, with the store writing as in any run."""
    run_id = store.create_run(config)
    clock = EpochClock()
    sink = StoreSink(store, run_id)
    fit(config, store.run_dir(run_id), [sink, clock], teacher=teacher)
    sink.close()
    return clock.epoch_times()


def variants(setting: dict, epochs: int) -> dict:
    """The three runs of a setting: CE, KD reading the cache, KD forwarding the teacher every step."""

    def config(method: dict, cache: bool):
        teacher = {**setting["teacher"], "cache": {"enabled": cache}}
        # the route probe is a probe, not training: off in every run timed here
        probes = {"route_probe_size": 0}
        return validate_config(
            {**COMMON, **setting, "teacher": teacher, "method": method, "epochs": epochs, "probes": probes}
        )

    return {
        "CE": config({"name": "ce"}, False),
        "KD cached": config(COMMON["method"], True),
        "KD uncached": config(COMMON["method"], False),
    }


def prepare_teacher(config, store: RunStore):
    """The teacher artifact (trained now), and the seconds its output cache takes to compute."""

    def train(teacher_config, run_id: str) -> None:
        sink = StoreSink(store, run_id)
        fit(teacher_config, store.run_dir(run_id), [sink])
        sink.close()

    artifact = obtain_teacher(config, store, train)
    data = load_data(config.data)
    start = time.perf_counter()
    attach_teacher(config, artifact, artifact.build(data), None, data, torch.device("cpu"))
    return artifact, time.perf_counter() - start, len(data.train)


def bench(name: str, setting: dict, store: RunStore, repeats: int, epochs: int, quick: bool = False) -> float:
    configs = variants(setting, epochs)
    artifact, cache_seconds, n_train = prepare_teacher(configs["KD cached"], store)
    print(f"{name}: {n_train} training samples; the cache took {cache_seconds:.2f} s to compute (once)", flush=True)
    times: dict[str, list[float]] = {label: [] for label in configs}
    ratios = []
    for repeat in range(repeats):
        medians = {}
        for label, config in configs.items():
            epochs_timed = kdlib_epochs(config, store, None if label == "CE" else artifact)
            times[label] += epochs_timed
            medians[label] = statistics.median(epochs_timed) * 1e3
        ratios.append(medians["KD cached"] / medians["CE"])
        print(f"  repeat {repeat}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in medians.items())
              + f"; KD cached / CE {ratios[-1]:.3f}", flush=True)  # fmt: skip
    ce, cached, uncached = (statistics.median(times[label]) * 1e3 for label in configs)
    print(
        f"{name}: ms/epoch CE {ce:.1f} | KD cached {cached:.1f} ({cached / ce:.3f}x CE) | "
        f"KD uncached {uncached:.1f} ({uncached / ce:.3f}x CE); {len(times['CE'])} epochs each; "
        f"the cache removes {(uncached - cached) / (uncached - ce):.0%} of KD's time over CE; "
        f"KD cached / CE per repeat {min(ratios):.3f} to {max(ratios):.3f}, median {statistics.median(ratios):.3f}"
    )
    config = configs["KD cached"]
    extra_us = loss_extra_us(config, num_classes=10, **({"repeats": 3, "calls": 20} if quick else {}))
    steps = math.ceil(n_train / config.batch_size)
    print(
        f"{name}: KD's loss alone costs {extra_us:.0f} us per step more than CE's "
        f"(logits [{config.batch_size}, 10], forward and backward, measured apart): {steps} steps make "
        f"{steps * extra_us / 1e3:.1f} ms per epoch, so no cache can bring KD under "
        f"{(ce + steps * extra_us / 1e3) / ce:.3f}x CE here"
    )
    return statistics.median(ratios)


def loss_extra_us(config, num_classes: int, repeats: int = 15, calls: int = 200) -> float:
    """Median time per step of KD's loss (forward and backward, as kdlib's KD computes it each step) minus
    CE's, on fixed logits.

    What the teacher-output cache cannot remove: the arithmetic of distillation itself."""
    generator = torch.Generator().manual_seed(0)
    size = (config.batch_size, num_classes)
    logits, teacher = torch.randn(size, generator=generator), torch.randn(size, generator=generator)
    batch = Batch(torch.zeros(size[0], 1), torch.randint(0, num_classes, size[:1], generator=generator),
                  torch.arange(size[0]))
    temperature, w_ce, w_kd = (as_schedule(getattr(config.method, k)).value_at(0, config.epochs)
                               for k in ("temperature", "w_ce", "w_kd"))

    def kd() -> None:
        z = logits.clone().requires_grad_()
        kd_step(z, teacher, batch.y, temperature, w_ce, w_kd).loss.backward()

    def ce() -> None:
        z = logits.clone().requires_grad_()
        CrossEntropy.loss(None, batch, z, None).loss.backward()  # CE's loss reads nothing of its instance

    timings: dict = {kd: [], ce: []}
    for _ in range(repeats):
        for step, found in timings.items():
            start = time.perf_counter()
            for _ in range(calls):
                step()
            found.append((time.perf_counter() - start) / calls)
    return (statistics.median(timings[kd]) - statistics.median(timings[ce])) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = parse_args(parser, {"repeats": 1, "epochs": 3}, f"{QUICK_SAMPLES} samples per setting")
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as home:
        store = RunStore(home)
        chosen = settings(args.quick)
        ratios = {
            name: bench(name, chosen[name], store, args.repeats, args.epochs, args.quick) for name in args.settings
        }
    worst = max(ratios, key=ratios.get)
    print(f"threads {torch.get_num_threads()}; cache_ratio is the worse setting's: {worst}")
    print(f"cache_ratio {ratios[worst]:.3f}")


if __name__ == "__main__":
    main()
