"""Every method's recorded behaviour on fixed seeds: step losses, epoch scalars and per-sample arrays.

`record(name, probe)` trains the method for two epochs on toy2d (the tiny setting of the contract
test) and returns what the run emitted, flattened to arrays. `behaviour_reference.npz` holds what
the code before the method contract was refactored (HEAD 0083da2) recorded, except ProKT's two cases,
re-recorded alone when its teacher step became the official one (the other arrays kept byte for
byte); `test_behaviour.py` checks that the code of today gives the same. Regenerate only on purpose:

    .venv/bin/python -m tests.methods.behaviour
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

REFERENCE = Path(__file__).with_name("behaviour_reference.npz")
# (method, probe): every method with the gradient probe on; those with a second path without it
CASES = [(name, True) for name in ("ce", "dfa", "kd", "label_smoothing", "lsskd", "prokt", "pskd", "rco", "uda_pkd",
                                   "wsl")] + [(name, False) for name in ("kd", "rco", "prokt", "wsl", "pskd")]


def record(name: str, probe: bool) -> dict[str, np.ndarray]:
    from kdlib.events import EpochEnded, MemorySink, StepLogged
    from kdlib.runner import execute
    from kdlib.store import RunStore
    from kdlib.validation import validate_config
    from tests.conftest import tiny_config
    from tests.methods.test_contract import tiny_data

    # uda_pkd: a domain pair of the same points twice, which is what it trained on before such pairs were
    # required (its source then stood in for the target)
    config = tiny_config(method={"name": name}, epochs=2, data=tiny_data(name),
                         probes={"log_every": 2, "grad_stats": probe})
    store = RunStore()
    run_id = store.create_run(validate_config(config))
    sink = MemorySink()
    status = execute(run_id, store, own_sinks=[sink])
    assert status == "done", store.run(run_id)["error"]
    out: dict[str, np.ndarray] = {}
    steps = sink.of(StepLogged)
    out["step.train.loss"] = np.array([e.scalars["train.loss"] for e in steps if "train.loss" in e.scalars])
    for event in sink.of(EpochEnded):
        for key, value in event.scalars.items():
            out[f"epoch{event.epoch}.{key}"] = np.array(value)
        for key, value in event.per_sample.items():
            out[f"epoch{event.epoch}.{key}"] = np.asarray(value)
    return out


def case_key(name: str, probe: bool) -> str:
    return f"{name}{'' if probe else '-noprobe'}"


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    arrays = {}
    with tempfile.TemporaryDirectory() as home:
        os.environ["KDLIB_HOME"] = home
        for name, probe in CASES:
            for key, value in record(name, probe).items():
                arrays[f"{case_key(name, probe)}/{key}"] = value
    np.savez_compressed(REFERENCE, **arrays)
    print(f"{len(arrays)} arrays in {REFERENCE}")


if __name__ == "__main__":
    main()
