"""Live lag: from a metric produced by a background run to the moment a reader in another process sees it.

A real run is started with `kdlib.launch` (its own process; every step logged, per-sample arrays and
test probabilities every epoch, so the store's writer has plenty to do) and this process follows it
the way a view does: `RunStore.metrics(run_id, since_id=...)` every `--poll` seconds. A step's lag is
the time this process first saw its row minus the time the run produced it (the `time` the store
keeps with every metric); the poll interval is part of it (half of it on average).

    .venv/bin/python bench/live.py [--seconds 20] [--poll 0.05] [--log-every 1] [--epochs 1000] [--quick]

The run is followed until it ends or `--seconds` have passed, then stopped.
`--quick` (a check that it works, in seconds; `tests/test_bench.py`): a run of 2 epochs on 600
samples (28 logged steps), followed until it ends (60 s at the most); its lags mean little.

Last line: `live_lag_p95_s <95th percentile of the lag, in seconds>`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from timing import parse_args  # noqa: E402

import kdlib  # noqa: E402
from kdlib.store import ACTIVE, RunStore  # noqa: E402

CONFIG = {
    "data": {"name": "toy2d", "shape": "moons", "n_samples": 6000, "noise": 0.2},
    "student": {"name": "mlp", "hidden": [64, 64]},
    "method": {"name": "ce"},
    "batch_size": 32,
    "optimizer": {"name": "adam", "lr": 0.01},
    "probes": {"probs_every": 1},
    "device": "cpu",
}
QUICK_SAMPLES = 600  # --quick: 420 training samples, 14 steps an epoch


def follow(store: RunStore, run_id: str, poll: float, seconds: float) -> list[float]:
    """Lags of every step scalar seen while the run lives, or until `seconds` have passed."""
    lags, last_id, deadline = [], 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        rows = store.metrics(run_id, scope="step", since_id=last_id)
        seen = time.time()
        if not rows.empty:
            last_id = int(rows.id.iloc[-1])
            lags += (seen - rows.time).tolist()
        elif store.run(run_id)["status"] not in ACTIVE:
            break
        time.sleep(poll)
    return lags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20, help="how long to follow the run at the most")
    parser.add_argument("--poll", type=float, default=0.05, help="seconds between two reads of the store")
    parser.add_argument("--log-every", type=int, default=1, help="probes.log_every of the run")
    parser.add_argument("--epochs", type=int, default=1000, help="epochs of the run")
    args = parse_args(parser, {"epochs": 2, "seconds": 60}, f"{QUICK_SAMPLES} samples")
    home = Path(tempfile.mkdtemp(prefix="kdlib-bench-live-"))
    try:
        config = CONFIG | {"epochs": args.epochs, "probes": CONFIG["probes"] | {"log_every": args.log_every}}
        if args.quick:
            config["data"] = CONFIG["data"] | {"n_samples": QUICK_SAMPLES}
        handle = kdlib.launch(config, home=home)
        started = time.monotonic()
        lags = np.array(follow(RunStore(home), handle.run_id, args.poll, args.seconds))
        followed = time.monotonic() - started
        handle.stop()
        handle.wait(timeout=60)
        info = handle.info
        steps = len(lags) // 2  # two scalars per logged step: train.loss and lr
        print(f"followed run {handle.run_id} for {followed:.0f} s, polling every {args.poll * 1000:.0f} ms: "
              f"{steps} logged steps over {info['epoch'] + 1 if info['epoch'] is not None else 0} epochs")  # fmt: skip
        if not len(lags):
            sys.exit(f"no step metrics seen; the run's log is {handle.store.run_dir(handle.run_id) / 'worker.log'}")
        p50, p95 = np.percentile(lags, [50, 95])
        print(
            f"lag from produced to seen: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {lags.max() * 1000:.0f} ms"
        )
        print(f"live_lag_p95_s {p95:.3f}")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
