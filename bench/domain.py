"""Domain adaptation on the embedded pairs: target-domain accuracy of three students, mean ± std over seeds.

For each pair (configs/<pair>_uda_pkd.yaml: toy2d_shift and mnist1d_shift), with seeds 0..n-1:
(a) `ce`: the student trained on the labelled source alone; (b) `kd`: the student distilled (Hinton
KD) from the teacher trained on the source, without adaptation; (c) `uda_pkd`: progressive KD with
the teacher adapted to the unlabelled target, in the official form (reverse KL, the KD loss also
trains the teacher) and with `teacher_frozen_in_kd` (forward KL, the teacher moved by adaptation only). All three train the same student for the same epochs
with the same optimizer; the teacher is the config's, trained once per pair and shared. The table
also shows the teachers: trained on the source only, and after uda_pkd's adaptation (read from the
run's last checkpoint). Accuracy is on the target's test split, whose labels no training step sees.

    .venv/bin/python bench/domain.py [--seeds 3] [--epochs N] [--pairs toy2d_shift mnist1d_shift] [--quick]

Small models are fastest here with one thread per process, so the bench sets torch to one thread.
`--quick` (a check that it works, in seconds; `tests/test_bench.py`): both pairs, 2 seeds of 2
epochs, 600 samples per domain, the teacher trained for 1 epoch; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from timing import parse_args  # noqa: E402

from kdlib.data import load_data  # noqa: E402
from kdlib.models import build_model  # noqa: E402
from kdlib.runner import execute  # noqa: E402
from kdlib.store import RunStore  # noqa: E402
from kdlib.teachers import obtain_teacher  # noqa: E402
from kdlib.trainer import load_checkpoint  # noqa: E402
from kdlib.validation import load_config  # noqa: E402

PAIRS = {"toy2d_shift": "toy2d_uda_pkd", "mnist1d_shift": "mnist1d_uda_pkd"}
# Hinton KD with the settings of the embedded KD configs (toy2d_kd.yaml: T=2; mnist1d_kd.yaml: T=1).
KD = {
    "toy2d_shift": "method={name: kd, temperature: 2.0, w_ce: 0.1, w_kd: 0.9}",
    "mnist1d_shift": "method={name: kd, temperature: 1.0, w_ce: 0.1, w_kd: 0.9}",
}
ROWS = ["ce", "kd", "uda_pkd", "uda_pkd_frozen"]
# --quick: 600 samples per domain, the teacher trained for 1 epoch
QUICK = ["data.source.n_samples=600", "data.target.n_samples=600", "teacher.epochs=1"]


def pair_config(pair: str, overrides: list[str], quick: bool):
    return load_config(ROOT / "configs" / f"{PAIRS[pair]}.yaml", [*(QUICK if quick else []), *overrides])


def target_accuracy(model: torch.nn.Module, data) -> float:
    model.eval()
    with torch.no_grad():
        logits = model(data.test.x)
    return (logits.argmax(1) == data.test.y).float().mean().item()


def run(store: RunStore, pair: str, row: str, seed: int, epochs: int | None, quick: bool = False) -> dict:
    overrides = [f"seed={seed}"] + ([f"epochs={epochs}"] if epochs else [])
    if row == "ce":
        overrides += ["method={name: ce}", "teacher=null"]
    elif row == "kd":
        overrides.append(KD[pair])
    elif row == "uda_pkd_frozen":
        overrides.append("method.teacher_frozen_in_kd=true")
    config = pair_config(pair, overrides, quick)
    run_id = store.create_run(config)
    started = time.perf_counter()
    if execute(run_id, store) != "done":
        raise RuntimeError(f"{pair} {row} seed {seed}: {store.run(run_id)['error']}")
    result = {
        "pair": pair,
        "row": row,
        "seed": seed,
        "acc": 100 * store.epoch_metrics(run_id).iloc[-1]["test.acc"],
        "seconds": time.perf_counter() - started,
    }
    if row.startswith("uda_pkd"):  # the adapted teacher, from the run's last checkpoint
        data = load_data(config.data)
        teacher = build_model(config.teacher.model, data.input_shape, data.num_classes)
        state = load_checkpoint(store.run_dir(run_id) / "checkpoint.pt")
        teacher.load_state_dict(state["distiller"]["teacher"])
        result["teacher_acc"] = 100 * target_accuracy(teacher, data)
    return result


def source_teacher_accuracy(store: RunStore, pair: str, quick: bool = False) -> float:
    config = pair_config(pair, [], quick)
    artifact = obtain_teacher(config, store, lambda teacher_config, run_id: execute(run_id, store))
    data = load_data(config.data)
    return 100 * target_accuracy(artifact.build(data), data)


def table(results: pd.DataFrame, teachers: dict[str, float]) -> str:
    pairs = list(dict.fromkeys(results.pair))
    lines = ["| target accuracy % | " + " | ".join(pairs) + " |", "|---" * (len(pairs) + 1) + "|"]

    def cell(frame: pd.DataFrame, column: str) -> str:
        return f"{frame[column].mean():.1f} ± {frame[column].std():.1f}"

    names = {
        "ce": "student, source only (ce)",
        "kd": "student, KD without adaptation (kd)",
        "uda_pkd": "student, progressive KD + UDA (uda_pkd, official form)",
        "uda_pkd_frozen": "student, uda_pkd with teacher_frozen_in_kd",
    }
    for row in ROWS:
        cells = [cell(results[(results.pair == p) & (results.row == row)], "acc") for p in pairs]
        lines.append(f"| {names[row]} | " + " | ".join(cells) + " |")
    lines.append("| teacher, source only | " + " | ".join(f"{teachers[p]:.1f}" for p in pairs) + " |")
    for row, name in (("uda_pkd", "official form"), ("uda_pkd_frozen", "teacher_frozen_in_kd")):
        adapted = [cell(results[(results.pair == p) & (results.row == row)], "teacher_acc") for p in pairs]
        lines.append(f"| teacher after uda_pkd's adaptation ({name}) | " + " | ".join(adapted) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="student epochs (default: the config's)")
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    args = parse_args(parser, {"seeds": 2, "epochs": 2}, ", ".join(QUICK))
    torch.set_num_threads(1)
    rows, teachers, started = [], {}, time.perf_counter()
    with tempfile.TemporaryDirectory() as home:
        store = RunStore(home)
        for pair in args.pairs:
            teachers[pair] = source_teacher_accuracy(store, pair, args.quick)
            for seed in range(args.seeds):
                for row in ROWS:
                    rows.append(run(store, pair, row, seed, args.epochs, args.quick))
                    print(rows[-1], file=sys.stderr)
    results = pd.DataFrame(rows)
    print(table(results, teachers))
    print(f"\n{args.seeds} seeds; {time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
