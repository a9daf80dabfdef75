"""First point: from Start (`kdlib.launch`) to the run's first step row in the store, beside a cold `import torch`.

The run is the app's default, configs/toy2d_kd.yaml (KD on two moons), whose teacher is trained once
first, so every timed run finds it in the cache. This process has imported kdlib and started the warm
worker, as the app does when it starts; each round then times, one after the other:

- `torch_import_s`: a cold `python -c "import torch"` (a new process, its wall time);
- `first_point_s`: launch() through the warm worker until the run's first step row is in the store
  (read the way a view reads it, every 5 ms);
- `first_point_plain_s`: the same with KDLIB_WARM=0, the run's own fresh Python.

    .venv/bin/python bench/first_point.py [--rounds 5] [--quick]

Each run is stopped once its first row is seen, and gone before the next round. The medians are
printed, then `first_point_ratio` = first_point_s / torch_import_s (the goal: 0.5 or less) and where
the last warm run spent its time. `--quick` (tests/test_bench.py): 1 round, a 2-epoch teacher on 400
samples; its numbers mean little.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from timing import parse_args  # noqa: E402

import kdlib  # noqa: E402
from kdlib import warm  # noqa: E402
from kdlib.store import RunStore  # noqa: E402

CONFIG = ROOT / "configs" / "toy2d_kd.yaml"
QUICK = ["teacher.epochs=2", "data.n_samples=400"]


def torch_import() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return time.perf_counter() - start


def first_point(home: Path, overrides: list[str], warm_worker: bool) -> tuple[float, kdlib.RunHandle]:
    """Seconds from launch() to the run's first step row, and the run (stopped, its process gone)."""
    os.environ["KDLIB_WARM"] = "1" if warm_worker else "0"
    start = time.perf_counter()
    handle = kdlib.launch(CONFIG, home=home, overrides=overrides)
    with sqlite3.connect(handle.store.path) as db:
        row = "SELECT 1 FROM metrics WHERE run_id = ? AND scope = 'step' LIMIT 1"
        while db.execute(row, (handle.run_id,)).fetchone() is None:
            if time.perf_counter() - start > 120:
                sys.exit(f"no step row in 120 s; see {handle.store.run_dir(handle.run_id) / 'worker.log'}")
            time.sleep(0.005)
    seconds = time.perf_counter() - start
    handle.stop()
    handle.wait(timeout=120)
    handle.process.wait(timeout=120)  # its exit's work is not the next round's
    return seconds, handle


def phases(store: RunStore, run_id: str, launched: float) -> str:
    """Where a run's first point came from: its events' times after launch()."""
    events = store.events(run_id)
    first = store.metrics(run_id, scope="step").time.min()
    times = [(kind, at) for kind, at in zip(events.kind, events.time, strict=True) if kind in ("threads", "started")]
    return ", ".join(f"{kind} at {at - launched:.3f} s" for kind, at in [*times, ("first step row", first)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed launches of each kind (and torch imports)")
    args = parse_args(parser, {"rounds": 1}, "a 2-epoch teacher on 400 samples")
    overrides = ["epochs=30", *(QUICK if args.quick else [])]
    home = Path(tempfile.mkdtemp(prefix="kdlib-bench-first-"))
    try:
        teacher = kdlib.launch(CONFIG, home=home, overrides=[*overrides[1:], "epochs=1"])
        if teacher.wait(timeout=600) != "done":
            sys.exit(f"the teacher's run ended {teacher.status}: {teacher.info['error']}")
        if not warm.start_server() and not warm.ready():
            sys.exit("no warm worker here (KDLIB_WARM=0, or not Linux)")
        deadline = time.monotonic() + 120
        while not warm.ready():
            if time.monotonic() > deadline:
                sys.exit("the warm worker did not start serving in 120 s")
            time.sleep(0.1)
        imports, warm_times, plain_times = [], [], []
        for _ in range(args.rounds):
            imports.append(torch_import())
            launched = time.time()
            seconds, handle = first_point(home, overrides, warm_worker=True)
            warm_times.append(seconds)
            if not isinstance(handle.process, warm.WarmProcess):
                sys.exit("the run did not start through the warm worker")
            last = phases(handle.store, handle.run_id, launched)
            plain_times.append(first_point(home, overrides, warm_worker=False)[0])
        first, plain, torch_s = (statistics.median(t) for t in (warm_times, plain_times, imports))
        print(f"{args.rounds} rounds on {os.cpu_count()} cores; the last warm run: {last}")
        print(f"first_point_plain_s {plain:.3f}")
        print(f"first_point_s {first:.3f}")
        print(f"torch_import_s {torch_s:.3f}")
        print(f"first_point_ratio {first / torch_s:.3f}")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
