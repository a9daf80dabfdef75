"""A CIFAR-shaped synthetic data set for the benchmarks: in memory, no download, learnable.

Registered as data `bench_images` when imported (benchmarks only; not part of kdlib's data sets).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kdlib.data import DATASETS  # noqa: E402
from kdlib.data.base import tensor_bundle  # noqa: E402
from kdlib.data.params import SplitParams  # noqa: E402


class ImagesParams(SplitParams):
    name: Literal["bench_images"] = "bench_images"
    n_samples: int = Field(7000, ge=100, description="images in all splits together")


@DATASETS.register("bench_images")
class BenchImages:
    """CIFAR-shaped images whose class is a fixed random linear rule on their coarse 8x8 version."""

    Params = ImagesParams

    @staticmethod
    def load(p: ImagesParams):
        generator = torch.Generator().manual_seed(0)
        coarse = torch.randn(p.n_samples, 3, 8, 8, generator=generator)
        x = F.interpolate(coarse, size=32, mode="bilinear", align_corners=False)
        x += 0.3 * torch.randn(x.shape, generator=generator)
        y = (coarse.flatten(1) @ torch.randn(3 * 8 * 8, 10, generator=generator)).argmax(1)
        return tensor_bundle(x, y, 10, p.val_fraction, p.test_fraction, p.split_seed)
