"""Every method on mnist1d with several seeds: accuracy, calibration and cost, as a Markdown table.

Each method runs its example config (`configs/mnist1d_<method>.yaml`: an MLP-128 student and, for
the methods with a teacher, the quick start's 1-D CNN teacher, trained once and shared), with
seeds 0..n-1. Wall time per epoch is the run's training time over its epochs, relative to CE's.

    .venv/bin/python bench/methods.py [--seeds 3] [--epochs 30] [--methods ce kd ...] [--quick]

`--quick` (a check that it works, in seconds; `tests/test_bench.py`): every row, 2 seeds of 1 epoch
on 600 samples of mnist1d, the teacher trained for 1 epoch (RCO with one anchor); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from timing import parse_args  # noqa: E402

from kdlib.runner import execute  # noqa: E402
from kdlib.store import RunStore  # noqa: E402
from kdlib.validation import load_config  # noqa: E402

MLP = "student={name: mlp, hidden: [128]}"
MLP2 = "student={name: mlp, hidden: [128, 128]}"
CNN = "student={name: cnn1d, channels: [32, 32, 32]}"
# row label -> (config, overrides): the rows without a named student train the same MLP-128; LSSKD
# needs two hidden layers for its layered distillation, and PS-KD is also shown on the CNN itself
# (self-distillation needs no smaller student), each beside CE on the same model.
CONFIGS = {
    "ce": ("mnist1d_ce", [MLP]), "label_smoothing": ("mnist1d_ls", [MLP]), "kd": ("mnist1d_kd", [MLP]),
    "rco": ("mnist1d_rco", [MLP]), "pskd": ("mnist1d_pskd", [MLP]), "wsl": ("mnist1d_wsl", [MLP]),
    "prokt": ("mnist1d_prokt", [MLP]), "dfa": ("mnist1d_dfa", [MLP]), "lsskd": ("mnist1d_lsskd", [MLP]),
    "ce (mlp 128x128)": ("mnist1d_ce", [MLP2]), "lsskd (mlp 128x128)": ("mnist1d_lsskd", [MLP2]),
    "ce (cnn1d)": ("mnist1d_ce", [CNN]), "pskd (cnn1d)": ("mnist1d_pskd", [CNN]),
}
QUICK_DATA, QUICK_TEACHER = "data.n_samples=600", "teacher.epochs=1"  # --quick: 420 training samples
QUICK_METHOD = {"rco": ["method.anchors.num_anchors=1"]}  # --quick: a 1-epoch teacher's route holds one anchor


def run_method(store: RunStore, method: str, seed: int, epochs: int, quick: bool = False) -> dict:
    name, overrides = CONFIGS[method]
    path, overrides = ROOT / "configs" / f"{name}.yaml", [*overrides, f"seed={seed}", f"epochs={epochs}"]
    if quick:  # (teacher.epochs cannot be set on a config without a teacher)
        with_teacher = "teacher" in yaml.safe_load(path.read_text())
        overrides += [QUICK_DATA, *([QUICK_TEACHER] if with_teacher else []), *QUICK_METHOD.get(method, [])]
    config = load_config(path, overrides)
    if config.teacher is not None:  # train the shared teacher outside the timed run
        from kdlib.teachers import obtain_teacher

        def train(teacher_config, run_id):
            execute(run_id, store)

        obtain_teacher(config, store, train)
    run_id = store.create_run(config)
    started = time.perf_counter()
    status = execute(run_id, store)
    seconds = time.perf_counter() - started
    if status != "done":
        raise RuntimeError(f"{method} seed {seed}: {store.run(run_id)['error']}")
    last = store.epoch_metrics(run_id).iloc[-1]
    return {"method": method, "seed": seed, "acc": 100 * last["test.acc"], "ece": 100 * last["test.ece"],
            "nll": last["test.nll"], "epoch_s": seconds / epochs}


def table(results: pd.DataFrame) -> str:
    grouped = results.groupby("method", sort=False)
    mean, std = grouped.mean(numeric_only=True), grouped.std(numeric_only=True)
    ce_time = mean.loc["ce", "epoch_s"] if "ce" in mean.index else mean.epoch_s.iloc[0]
    lines = ["| method | test accuracy % | ECE % | NLL | time / epoch vs CE |", "|---|---|---|---|---|"]
    for method in mean.index:
        m, s = mean.loc[method], std.loc[method]
        lines.append(f"| {method} | {m.acc:.1f} ± {s.acc:.1f} | {m.ece:.1f} ± {s.ece:.1f} | {m.nll:.3f} | "
                     f"{m.epoch_s / ce_time:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--methods", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these small models)")
    args = parse_args(parser, {"seeds": 2, "epochs": 1}, f"{QUICK_DATA}, {QUICK_TEACHER}")
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as home:
        store = RunStore(home)
        for method in args.methods:
            for seed in range(args.seeds):
                rows.append(run_method(store, method, seed, args.epochs, args.quick))
                print(f"{method} seed {seed}: {rows[-1]['acc']:.1f}%", file=sys.stderr, flush=True)
        teacher = store.runs("teacher")
        if not teacher.empty:
            epochs, acc = teacher.total_epochs.iloc[0], 100 * teacher.test_acc.iloc[0]
            print(f"teacher (cnn1d, {epochs} epochs): test accuracy {acc:.1f}%")
    print(f"mnist1d, {args.epochs} epochs, seeds 0..{args.seeds - 1}, {args.threads} torch thread(s); "
          "student MLP-128 unless named\n")
    print(table(pd.DataFrame(rows)))


if __name__ == "__main__":
    main()
