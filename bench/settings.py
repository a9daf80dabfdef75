"""The two settings the speed benchmarks share: the same runs, timed for different questions.

- images: a CIFAR-shaped synthetic set (`bench/images.py`), a 2-D CNN student, a ResNet-8 teacher;
- mnist1d: an MLP-128 student and a 1-D CNN teacher, ~2 ms steps where fixed costs weigh the most.

`settings(quick=True)`: the same on QUICK_SAMPLES samples each, for the benchmarks' `--quick` mode.
"""

from __future__ import annotations

import images  # noqa: F401 - registers the bench_images data set

COMMON = {
    "method": {"name": "kd", "temperature": 4.0, "w_ce": 0.1, "w_kd": 0.9},
    "batch_size": 128,
    "optimizer": {"name": "adam", "lr": 0.003},
    "lr_schedule": {"name": "constant"},
    "device": "cpu",
}
SETTINGS = {
    "images": {
        "data": {"name": "bench_images", "n_samples": 7000},
        "student": {"name": "cnn2d", "channels": [16, 32]},
        "teacher": {"model": {"name": "resnet8"}, "epochs": 1},
    },
    "mnist1d": {
        "data": {"name": "mnist1d", "n_samples": 6000},
        "student": {"name": "mlp", "hidden": [128]},
        "teacher": {"model": {"name": "cnn1d"}, "epochs": 1},
    },
}
QUICK_SAMPLES = 300  # --quick: 210 training samples, 2 steps an epoch


def settings(quick: bool = False) -> dict:
    """SETTINGS, or with `quick` the same on QUICK_SAMPLES samples each."""
    if not quick:
        return SETTINGS
    return {name: {**s, "data": {**s["data"], "n_samples": QUICK_SAMPLES}} for name, s in SETTINGS.items()}
