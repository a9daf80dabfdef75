"""scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes): real images, no download."""

from __future__ import annotations

from typing import Literal

import torch

from kdlib.data.base import DATASETS, DataBundle, tensor_bundle
from kdlib.data.params import SplitParams


class Params(SplitParams):
    name: Literal["digits"] = "digits"

    def sample_shape(self) -> tuple[int, ...]:
        return (1, 8, 8)

    def class_count(self) -> int:
        return 10


@DATASETS.register("digits")
class Digits:
    Params = Params

    @staticmethod
    def load(p: Params) -> DataBundle:
        from sklearn.datasets import load_digits  # imported here: sklearn costs a second at import

        d = load_digits()
        x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # pixel values are 0..16
        return tensor_bundle(
            x, torch.tensor(d.target), 10, p.val_fraction, p.test_fraction, p.split_seed, [str(i) for i in range(10)]
        )
