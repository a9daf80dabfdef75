"""2-D toy sets (moons, circles, spirals, blobs): small enough to draw decision boundaries."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from kdlib.data.base import DATASETS, DataBundle, tensor_bundle
from kdlib.data.params import SplitParams


class Params(SplitParams):
    name: Literal["toy2d"] = "toy2d"
    shape: Literal["moons", "circles", "spirals", "blobs"] = Field("moons", description="the shape of the classes")
    n_samples: int = Field(2000, ge=20, description="samples in all splits together")
    noise: float = Field(0.2, ge=0, description="standard deviation of the Gaussian noise on each point")
    num_classes: int = Field(2, ge=2, le=20, description="classes (spirals and blobs only; moons and circles have 2)")
    label_noise: float = Field(0.0, ge=0, lt=1, description="share of training labels flipped to another class")

    def sample_shape(self) -> tuple[int, ...]:
        return (2,)

    def class_count(self) -> int:
        return 2 if self.shape in ("moons", "circles") else self.num_classes

    @model_validator(mode="after")
    def _two_class_shapes(self) -> Params:
        if self.shape in ("moons", "circles") and self.num_classes != 2:
            raise ValueError(f"num_classes: {self.shape} has 2 classes; use shape spirals or blobs for more")
        return self


def _spirals(n: int, k: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = np.arange(n) % k
    t = rng.uniform(0.25, 1.0, n)
    angle = 3 * math.pi * t + 2 * math.pi * y / k
    x = np.stack([t * np.cos(angle), t * np.sin(angle)], 1) * 2
    return x + rng.normal(0, noise * 0.5, x.shape), y


def make_points(p: Params, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets as skd  # imported here: sklearn costs a second at import

    rng = np.random.default_rng(seed)
    if p.shape == "moons":
        x, y = skd.make_moons(p.n_samples, noise=p.noise, random_state=seed)
    elif p.shape == "circles":
        x, y = skd.make_circles(p.n_samples, noise=p.noise, factor=0.5, random_state=seed)
    elif p.shape == "spirals":
        x, y = _spirals(p.n_samples, p.num_classes, p.noise, rng)
    else:
        x, y = skd.make_blobs(p.n_samples, centers=p.num_classes, cluster_std=1 + 4 * p.noise, random_state=seed)
        x = (x - x.mean(0)) / x.std(0)
    return x.astype(np.float32), y.astype(np.int64)


def flip_labels(y: torch.Tensor, rate: float, num_classes: int, seed: int) -> torch.Tensor:
    """Move a `rate` share of labels to a different class, chosen uniformly."""
    if rate == 0:
        return y
    g = torch.Generator().manual_seed(seed)
    flip = torch.rand(len(y), generator=g) < rate
    shift = torch.randint(1, num_classes, (len(y),), generator=g)
    return torch.where(flip, (y + shift) % num_classes, y)


@DATASETS.register("toy2d")
class Toy2D:
    Params = Params

    @staticmethod
    def load(p: Params) -> DataBundle:
        x, y = make_points(p, p.split_seed)
        bundle = tensor_bundle(
            torch.from_numpy(x), torch.from_numpy(y), p.num_classes, p.val_fraction, p.test_fraction, p.split_seed
        )
        bundle.train.y = flip_labels(bundle.train.y, p.label_noise, p.num_classes, p.split_seed + 1)
        return bundle
