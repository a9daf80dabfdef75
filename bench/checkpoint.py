"""Saving a checkpoint: the state packed into flat buffers (kdlib's) against a plain copy of it.

The trainer saves a checkpoint every epoch: a copy of the state (student, optimizer, grad scaler,
method) is taken in the training thread, then written by a background thread. torch.save pays per
tensor and per pickled object, so kdlib packs every tensor into one flat buffer per dtype
(`kdlib.trainer.pack_state`). This times both side by side, copy and save together (best of
several rounds, one thread), for the students of `bench/overhead.py`'s two settings after one Adam
step, and checks that the packed file loads back equal.

    .venv/bin/python bench/checkpoint.py

Last line: `checkpoint_speedup_mnist1d <plain copy and save / packed>`.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from timing import best_of  # noqa: E402

from kdlib.models import build_model  # noqa: E402
from kdlib.models.base import MODELS  # noqa: E402
from kdlib.trainer import load_checkpoint, pack_state, save_atomic  # noqa: E402

STUDENTS = {  # (model params, input shape): bench/settings.py's students
    "mnist1d": ({"name": "mlp", "hidden": [128]}, (40,)),
    "images": ({"name": "cnn2d", "channels": [16, 32]}, (3, 32, 32)),
}


def plain_copy(value):
    """What the trainer did before packing: a detached clone of every tensor, the structure kept."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: plain_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain_copy(v) for v in value)
    return value


def state_after_one_step(params: dict, input_shape: tuple[int, ...]) -> dict:
    spec = MODELS.get(params["name"]).Params(**params)
    model = build_model(spec, input_shape, 10)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(8, *input_shape)).sum().backward()
    optimizer.step()
    return {"epoch": 0, "student": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": {},
            "distiller": {}}


def main() -> None:
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp())
    speedups = {}
    for name, (params, input_shape) in STUDENTS.items():
        state = state_after_one_step(params, input_shape)
        plain = best_of(lambda state=state: save_atomic(plain_copy(state), folder / "plain.pt"))
        packed = best_of(lambda state=state: save_atomic(pack_state(state), folder / "packed.pt"))
        loaded = load_checkpoint(folder / "packed.pt")
        assert all(torch.equal(loaded["student"][k], v) for k, v in state["student"].items())
        speedups[name] = plain / packed
        tensors = len(state["student"]) + sum(len(s) for s in state["optimizer"]["state"].values())
        print(f"{name} student ({tensors} tensors with Adam's): copy and save {plain * 1e3:.2f} ms, "
              f"packed {packed * 1e3:.2f} ms, speed-up {speedups[name]:.2f}x")
    print(f"checkpoint_speedup_mnist1d {speedups['mnist1d']:.2f}")


if __name__ == "__main__":
    main()
