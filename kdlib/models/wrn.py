"""Wide ResNets (Zagoruyko and Komodakis, 2016) as in RepDistiller: wrn_16_2 is depth 16, widen_factor 2.

A 3x3 stem of 16 channels, three stages of pre-activation blocks with 16k, 32k and 64k channels
(k = widen_factor; stride 1, 2, 2; (depth - 4) / 6 blocks a stage), BN-ReLU, global average pooling
and a linear classifier. Module names follow RepDistiller's `models/wrn.py`, so its checkpoints
load with `load_state_dict`.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import torch.nn.functional as F
from pydantic import Field, PositiveInt, field_validator
from torch import Tensor, nn

from kdlib.models.base import MODELS, image_channels
from kdlib.spec import Spec


class WideBlock(nn.Module):
    """BN-ReLU-conv3x3 twice, plus a shortcut (a 1x1 conv of the activated input where the shape changes)."""

    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.dropout = dropout
        self.convShortcut = None if in_planes == planes else nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        act = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(act)))
        out = self.conv2(F.dropout(out, self.dropout, self.training))
        return out + (x if self.convShortcut is None else self.convShortcut(act))


class Params(Spec):
    name: Literal["wrn"] = "wrn"
    depth: int = Field(16, ge=10, description="layers: 6n + 4 for n blocks a stage (16, 22, 28, 40, ...)")
    widen_factor: PositiveInt = Field(2, description="channel multiplier of the three stages (16k, 32k, 64k)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout between the two convs of each block")

    @field_validator("depth")
    @classmethod
    def _six_n_plus_four(cls, depth: int) -> int:
        if (depth - 4) % 6:
            raise ValueError(f"depth must be 6n + 4 (e.g. 16, 22, 28, 40); {depth} is not")
        return depth


@MODELS.register("wrn")
class WideResNet(nn.Module):
    Params = Params

    def __init__(self, params: Params, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        blocks, k = (params.depth - 4) // 6, params.widen_factor
        planes = [16, 16 * k, 32 * k, 64 * k]
        self.conv1 = nn.Conv2d(image_channels(input_shape, "wrn"), planes[0], 3, padding=1, bias=False)
        for i, stride in enumerate((1, 2, 2)):
            layer = [
                WideBlock(
                    planes[i] if b == 0 else planes[i + 1], planes[i + 1], stride if b == 0 else 1, params.dropout
                )
                for b in range(blocks)
            ]
            # The inner `layer` keeps RepDistiller's state-dict keys (block1.layer.0.conv1.weight, ...).
            self.add_module(f"block{i + 1}", nn.Sequential(OrderedDict(layer=nn.Sequential(*layer))))
        self.bn1 = nn.BatchNorm2d(planes[3])
        self.relu = nn.ReLU()
        self.avgpool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(planes[3], num_classes)
        self.feature_taps = {
            "stem": "conv1",
            "stage1": "block1",
            "stage2": "block2",
            "stage3": "block3",
            "embedding": "avgpool",
        }
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(self.avgpool(self.relu(self.bn1(x))))
