"""Any torchvision classification model, with its classifier replaced to output `num_classes`.

Pretrained weights (`weights: DEFAULT`) are torchvision's ImageNet ones, downloaded on first use
into torch's hub cache. Only the final linear layer is new; the rest starts from the weights.
"""

from __future__ import annotations

import difflib
from collections import OrderedDict
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator
from torch import Tensor, nn

from kdlib.models.base import MODELS, image_channels
from kdlib.spec import Spec

# Their classifier ends in a conv layer, not the linear layer this wrapper replaces.
_NO_LINEAR_HEAD = ("squeezenet1_0", "squeezenet1_1")


def architectures() -> list[str]:
    """torchvision's classification models that this wrapper supports (detection, video and quantized
    models live in submodules, so they are not listed)."""
    import torchvision  # imported here: it costs a second at import

    return [a for a in torchvision.models.list_models(module=torchvision.models) if a not in _NO_LINEAR_HEAD]


class Params(Spec):
    name: Literal["torchvision"] = "torchvision"
    arch: str = Field(
        "resnet18",
        description="a torchvision classification model: resnet18, mobilenet_v3_small, efficientnet_b0, vit_b_16, ...",
    )
    weights: str | None = Field(
        None,
        description="pretrained weights: DEFAULT (the best available) or a name "
        "such as IMAGENET1K_V1; none for a random start",
    )

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, arch: str) -> str:
        if arch in _NO_LINEAR_HEAD:
            raise ValueError(f"{arch!r} is not supported: its classifier is a conv layer, not a linear one")
        if arch not in architectures():
            close = difflib.get_close_matches(arch, architectures(), n=3, cutoff=0.5)
            hint = (
                f"did you mean {' or '.join(map(repr, close))}?"
                if close
                else "choose one of: " + ", ".join(architectures())
            )
            raise ValueError(f"{arch!r} is not a torchvision classification model; {hint}")
        return arch

    @field_validator("weights")
    @classmethod
    def _known_weights(cls, weights: str | None, info: ValidationInfo) -> str | None:
        arch = info.data.get("arch")  # absent when arch itself failed
        if weights is not None and arch is not None:
            import torchvision  # imported here: it costs a second at import

            names = list(torchvision.models.get_model_weights(arch).__members__)
            if weights not in names:
                raise ValueError(f"{arch} has no weights {weights!r}; choose one of: {', '.join(names)}")
        return weights


def _last_linear(model: nn.Module) -> str:
    # In every torchvision classifier (squeezenet aside) the last registered Linear is the output layer:
    # `fc`, `classifier[-1]`, `head` or `heads.head`.
    return [path for path, m in model.named_modules() if isinstance(m, nn.Linear)][-1]


@MODELS.register("torchvision")
class TorchvisionModel(nn.Module):
    """Any torchvision classification model, its classifier replaced to output `num_classes` (the model is
    `self.net`; 1-channel images are repeated to the 3 channels it expects)."""

    Params = Params

    def __init__(self, params: Params, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        channels = image_channels(input_shape, "torchvision")
        if channels not in (1, 3):
            raise ValueError(f"torchvision models take 1- or 3-channel images; the data has {channels} channels")
        self.gray = channels == 1
        # Without aux_logits=False these two return a tuple of logits in training mode.
        extra = {"aux_logits": False} if params.arch in ("googlenet", "inception_v3") else {}
        import torchvision  # imported here: it costs a second at import

        self.net = torchvision.models.get_model(params.arch, weights=params.weights, **extra)
        path = _last_linear(self.net)
        parent, _, attr = path.rpartition(".")
        old = self.net.get_submodule(path)
        # The Identity's output is the classifier's input, which makes it the "embedding" tap.
        head = nn.Sequential(OrderedDict(embedding=nn.Identity(), linear=nn.Linear(old.in_features, num_classes)))
        setattr(self.net.get_submodule(parent), attr, head)
        stages = {}
        if all(hasattr(self.net, f"layer{i}") for i in range(1, 5)):  # resnet, resnext, wide_resnet
            stages = {f"stage{i}": f"net.layer{i}" for i in range(1, 5)}
        self.feature_taps = {**stages, "embedding": f"net.{path}.embedding"}

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.expand(-1, 3, -1, -1) if self.gray else x)
