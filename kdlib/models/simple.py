"""Small models for small data: an MLP for any input, a 1-D CNN for signals, a 2-D CNN for images."""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Literal

from pydantic import Field, PositiveInt
from torch import Tensor, nn

from kdlib.models.base import MODELS, image_channels
from kdlib.spec import Spec

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def _stage_taps(n: int, embedding: str) -> dict[str, str]:
    return {**{f"stage{i + 1}": f"stages.{i}" for i in range(n)}, "embedding": embedding}


class MLPParams(Spec):
    name: Literal["mlp"] = "mlp"
    hidden: list[PositiveInt] = Field([128], description="widths of the hidden layers (none: a linear classifier)")
    activation: Literal["relu", "gelu", "tanh"] = Field("relu", description="activation after each hidden layer")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the output of each hidden layer")


@MODELS.register("mlp")
class MLP(nn.Module):
    """Fully connected layers on the flattened input."""

    Params = MLPParams

    def __init__(self, params: MLPParams, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        widths = [math.prod(input_shape), *params.hidden]
        self.flatten = nn.Flatten()
        self.stages = nn.Sequential(
            *(nn.Sequential(nn.Linear(a, b), _ACTIVATIONS[params.activation]()) for a, b in pairwise(widths))
        )
        self.drop = nn.Dropout(params.dropout)
        self.fc = nn.Linear(widths[-1], num_classes)
        # Taps are read before dropout, so features match between train and eval mode.
        self.feature_taps = _stage_taps(
            len(params.hidden), f"stages.{len(params.hidden) - 1}" if params.hidden else "flatten"
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.flatten(x)
        for stage in self.stages:
            x = self.drop(stage(x))
        return self.fc(x)


class CNN1DParams(Spec):
    name: Literal["cnn1d"] = "cnn1d"
    channels: list[PositiveInt] = Field([32, 32, 32], min_length=1, description="output channels of each conv layer")
    kernel_size: PositiveInt = Field(5, description="width of each conv kernel")
    stride: PositiveInt = Field(1, description="stride of each conv layer (2 halves the length at each layer)")
    pool: Literal["avg", "flatten"] = Field(
        "avg",
        description="how the last conv layer's output reaches the classifier: avg averages over the length "
        "(ignores where a pattern is, as suits shifted signals); flatten keeps every position",
    )


@MODELS.register("cnn1d")
class CNN1D(nn.Module):
    """Conv-BN-ReLU layers on signals [N, L] or [N, C, L], then a linear classifier."""

    Params = CNN1DParams

    def __init__(self, params: CNN1DParams, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        if len(input_shape) not in (1, 2):
            raise ValueError(
                f"model 'cnn1d' takes signals of shape [L] or [C, L]; the data has samples of shape {list(input_shape)}"
            )
        length, k, s = input_shape[-1], params.kernel_size, params.stride
        widths = [1 if len(input_shape) == 1 else input_shape[0], *params.channels]
        stages = []
        for a, b in pairwise(widths):
            conv = nn.Conv1d(a, b, k, s, padding=k // 2, bias=False)
            stages.append(nn.Sequential(conv, nn.BatchNorm1d(b), nn.ReLU()))
            length = (length + 2 * (k // 2) - k) // s + 1  # the conv's output length
        self.stages = nn.Sequential(*stages)
        if params.pool == "flatten":
            self.pool, features = nn.Flatten(), widths[-1] * length
        else:
            self.pool, features = nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten()), widths[-1]
        self.fc = nn.Linear(features, num_classes)
        self.feature_taps = _stage_taps(len(stages), "pool")

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        return self.fc(self.pool(self.stages(x)))


class CNN2DParams(Spec):
    name: Literal["cnn2d"] = "cnn2d"
    channels: list[PositiveInt] = Field(
        [32, 64], min_length=1, description="output channels of each conv block (each block halves H and W)"
    )


@MODELS.register("cnn2d")
class CNN2D(nn.Module):
    """Conv3x3-BN-ReLU-MaxPool blocks on images [N, C, H, W], global average pooling, a linear classifier."""

    Params = CNN2DParams

    def __init__(self, params: CNN2DParams, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        widths = [image_channels(input_shape, "cnn2d"), *params.channels]
        self.stages = nn.Sequential(
            *(
                nn.Sequential(nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(), nn.MaxPool2d(2))
                for a, b in pairwise(widths)
            )
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(widths[-1], num_classes)
        self.feature_taps = _stage_taps(len(params.channels), "pool")

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.stages(x)))
