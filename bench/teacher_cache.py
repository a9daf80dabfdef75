"""Epoch time of KD with the teacher-output cache, KD without it, and plain CE, side by side.

Two settings, each with a teacher artifact trained once (one epoch: its accuracy does not matter
for timing) and its output cache computed once (a one-off cost, printed apart):
- mnist1d: 6,000 samples in memory, MLP-128 student, 1-D CNN teacher;
- images: a CIFAR-shaped synthetic set (3x32x32 tensors in memory, 10 classes given by a fixed
  random linear rule on the 8x8 coarse image, plus fine noise), a small 2-D CNN student
  (cnn2d [16, 32]) and a CIFAR ResNet-8 teacher.
The three runs of a setting are interleaved (CE, KD cached, KD uncached, repeated) in one process
and compared by their median epoch time; the first epoch of each run is left out (warm-up, and the
cache's loading). The route probe is off in every run: it is a probe, not training.

    .venv/bin/python bench/teacher_cache.py [--repeats 4] [--epochs 4] [--threads 1] [--settings mnist1d images]

Last line: `cache_ratio <KD with the cache / CE>`, the worse of the two settings (named above it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from overhead import kdlib_epochs  # noqa: E402
from settings import COMMON, SETTINGS  # noqa: E402

from kdlib.config import validate_config  # noqa: E402
from kdlib.data import load_data  # noqa: E402
from kdlib.store import RunStore, StoreSink  # noqa: E402
from kdlib.teacher_cache import attach_teacher_cache  # noqa: E402
from kdlib.teachers import obtain_teacher  # noqa: E402
from kdlib.trainer import fit  # noqa: E402


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
    attach_teacher_cache(config, artifact, artifact.build(data), None, data, torch.device("cpu"))
    return artifact, time.perf_counter() - start, len(data.train)


def bench(name: str, setting: dict, store: RunStore, repeats: int, epochs: int) -> float:
    configs = variants(setting, epochs)
    artifact, cache_seconds, n_train = prepare_teacher(configs["KD cached"], store)
    print(f"{name}: {n_train} training samples; the cache took {cache_seconds:.2f} s to compute (once)", flush=True)
    times: dict[str, list[float]] = {label: [] for label in configs}
    for repeat in range(repeats):
        for label, config in configs.items():
            times[label] += kdlib_epochs(config, store, None if label == "CE" else artifact)
        medians = {label: statistics.median(t) * 1e3 for label, t in times.items()}
        print(f"  repeat {repeat}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in medians.items()), flush=True)
    ce, cached, uncached = medians["CE"], medians["KD cached"], medians["KD uncached"]
    print(
        f"{name}: ms/epoch CE {ce:.1f} | KD cached {cached:.1f} ({cached / ce:.3f}x CE) | "
        f"KD uncached {uncached:.1f} ({uncached / ce:.3f}x CE); {len(times['CE'])} epochs each; "
        f"the cache removes {(uncached - cached) / (uncached - ce):.0%} of KD's time over CE"
    )
    return cached / ce


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as home:
        store = RunStore(home)
        ratios = {name: bench(name, SETTINGS[name], store, args.repeats, args.epochs) for name in args.settings}
    worst = max(ratios, key=ratios.get)
    print(f"threads {torch.get_num_threads()}; cache_ratio is the worse setting's: {worst}")
    print(f"cache_ratio {ratios[worst]:.3f}")


if __name__ == "__main__":
    main()
