"""MNIST-1D (Greydanus, 2020): ten classes of 1-D signals, generated locally by `make_dataset`.

The generator's own train/test cut is kept as the test split (its test samples are drawn from the
same procedure); validation is carved from its training part. Generated sets are cached under
`$KDLIB_HOME/cache`, since generation costs about a second per 5,000 samples.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from kdlib.data.base import DATASETS, DataBundle, TensorSplit, split_indices
from kdlib.data.params import SplitParams
from kdlib.paths import cache_dir, temporary_beside
from kdlib.spec import MAX_SEED


class Params(SplitParams):
    name: Literal["mnist1d"] = "mnist1d"
    n_samples: int = Field(6000, ge=100, description="samples generated in all (train + val + test)")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="share of the samples in the test split")
    noise_scale: float = Field(0.25, ge=0, description="scale of the correlated noise (mnist1d's corr_noise_scale)")
    shift_scale: float = Field(1.0, ge=0, description="multiplies the generator's maximum translation (48 steps)")
    scale_coeff: float = Field(0.4, ge=0, description="random rescaling of each signal (mnist1d's scale_coeff)")
    generator_seed: int = Field(42, ge=0, le=MAX_SEED, description="seed of mnist1d's generator (42 is the published set)")

    def sample_shape(self) -> tuple[int, ...]:
        return (40,)

    def class_count(self) -> int:
        return 10


def generate(p: Params) -> dict[str, np.ndarray]:
    """The arrays `make_dataset` returns for these params, from the cache when present."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = p.n_samples, 1 - p.test_fraction, p.generator_seed
    args.corr_noise_scale, args.scale_coeff = p.noise_scale, p.scale_coeff
    args.max_translation = int(round(48 * p.shift_scale))
    key = {
        k: getattr(args, k)
        for k in ("num_samples", "train_split", "seed", "corr_noise_scale", "scale_coeff", "max_translation")
    }
    path = cache_dir() / f"mnist1d-{hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]}.npz"
    if path.exists():
        with np.load(path) as cached:
            return dict(cached)
    data = make_dataset(args)
    arrays = {k: np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test")}
    tmp = temporary_beside(path)
    with open(tmp, "wb") as file:  # a file object: np.savez would append .npz to a name
        np.savez(file, **arrays)
    tmp.replace(path)
    return arrays


@DATASETS.register("mnist1d")
class MNIST1D:
    Params = Params

    @staticmethod
    def load(p: Params) -> DataBundle:
        d = generate(p)
        x, y = torch.tensor(d["x"], dtype=torch.float32), torch.tensor(d["y"], dtype=torch.long)
        n_val = round(len(y) * p.val_fraction / (1 - p.test_fraction))
        train, val, _ = split_indices(len(y), n_val / len(y), 0.0, p.split_seed)
        test = TensorSplit(torch.tensor(d["x_test"], dtype=torch.float32), torch.tensor(d["y_test"], dtype=torch.long))
        return DataBundle(
            TensorSplit(x[train], y[train]), TensorSplit(x[val], y[val]), test, 10, (40,), [str(i) for i in range(10)]
        )
