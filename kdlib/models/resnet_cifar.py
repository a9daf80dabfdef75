"""The CIFAR ResNets of RepDistiller and mdistiller (He et al., 2016, section 4.2).

A 3x3 stem, three stages of BasicBlocks (depth = 6n + 2, n blocks a stage) with stride 1, 2, 2,
global average pooling and a linear classifier. resnet8..resnet110 have 16/16/32/64 channels
(stem/stages); resnet8x4 and resnet32x4 have 32/64/128/256. Module names follow RepDistiller's
`models/resnet.py`, so its checkpoints load with `load_state_dict`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, create_model
from torch import Tensor, nn

from kdlib.models.base import MODELS, image_channels
from kdlib.spec import Spec


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut (1x1 conv-BN where the shape changes), then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class CifarResNetParams(Spec):
    zero_init_residual: bool = Field(
        False,
        description="start each block's last BN scale at 0, so every block "
        "begins as the identity (helps the deepest ones train)",
    )


class CifarResNet(nn.Module):
    """The shared body; each registered subclass sets `depth` and `widths` (stem, stage 1, 2, 3)."""

    depth: int
    widths: tuple[int, int, int, int]

    def __init__(self, params: CifarResNetParams, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        blocks = (self.depth - 2) // 6
        stem = self.widths[0]
        self.conv1 = nn.Conv2d(image_channels(input_shape, params.name), stem, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU()
        planes = [stem, *self.widths[1:]]
        for i, stride in enumerate((1, 2, 2)):
            layer = [
                BasicBlock(planes[i] if b == 0 else planes[i + 1], planes[i + 1], stride if b == 0 else 1)
                for b in range(blocks)
            ]
            self.add_module(f"layer{i + 1}", nn.Sequential(*layer))
        # Adaptive rather than RepDistiller's AvgPool2d(8): the same on 32x32, and any size works.
        self.avgpool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(self.widths[-1], num_classes)
        self.feature_taps = {
            "stem": "relu",
            "stage1": "layer1",
            "stage2": "layer2",
            "stage3": "layer3",
            "embedding": "avgpool",
        }
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if params.zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x))


_NARROW, _WIDE = (16, 16, 32, 64), (32, 64, 128, 256)


def _register(name: str, depth: int, widths: tuple[int, ...]) -> None:
    params = create_model(f"{name}_params", __base__=CifarResNetParams, name=(Literal[name], name))
    MODELS.register(name)(type(name, (CifarResNet,), {"depth": depth, "widths": widths, "Params": params}))


for _depth in (8, 14, 20, 32, 44, 56, 110):
    _register(f"resnet{_depth}", _depth, _NARROW)
_register("resnet8x4", 8, _WIDE)
_register("resnet32x4", 32, _WIDE)
