"""Log-softmax over few classes on CPU: PyTorch's own path against `kdlib.ops`'s (along the samples).

PyTorch's CPU log-softmax over the last dimension is about ten times slower per row when there are
fewer classes than one vector register holds (16 float32 with AVX-512); `kdlib.ops.log_softmax` then
works along dim 0 of the transposed view. This prints both, timed side by side (best of several
rounds, one thread), for the shapes kdlib meets: a batch, an epoch of mnist1d, and 100 classes
(where kdlib keeps PyTorch's path).

    .venv/bin/python bench/softmax.py

Last line: `softmax_speedup_epoch <PyTorch's time / kdlib.ops's time for [4200, 10]>`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from timing import best_of  # noqa: E402

from kdlib import ops  # noqa: E402

SHAPES = {"batch": (128, 10), "epoch": (4200, 10), "epoch_100_classes": (4200, 100)}


def main() -> None:
    torch.set_num_threads(1)
    speedups = {}
    for name, shape in SHAPES.items():
        logits = torch.randn(shape)
        assert torch.allclose(ops.log_softmax(logits), F.log_softmax(logits, dim=1), atol=1e-6)
        theirs = best_of(lambda logits=logits: F.log_softmax(logits, dim=1), calls=50)
        ours = best_of(lambda logits=logits: ops.log_softmax(logits), calls=50)
        speedups[name] = theirs / ours
        print(f"{name} {list(shape)}: F.log_softmax {theirs * 1e6:.1f} us, kdlib.ops.log_softmax {ours * 1e6:.1f} us, "
              f"speed-up {speedups[name]:.2f}x")
    print(f"softmax_speedup_epoch {speedups['epoch']:.2f}")


if __name__ == "__main__":
    main()
