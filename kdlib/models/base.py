"""The model registry, `build_model`, and `FeatureTaps` for reading intermediate features.

Every model names its features in `feature_taps`: tap name -> dotted path of the submodule whose
output is that feature, ordered shallow to deep (e.g. "stage1", ..., "embedding", the last being
the [N, D] input of the classifier). Methods that match features ask for taps by name, so they work
with any model without knowing its layout.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType

from torch import Tensor, nn

from kdlib.registry import Registry
from kdlib.spec import Spec

MODELS: Registry = Registry("model", package="kdlib.models")


def build_model(spec: Spec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The model a validated model section describes, for samples of `input_shape` (no batch dim)."""
    return MODELS.get(spec.name)(spec, input_shape, num_classes)


def feature_names(model: nn.Module) -> list[str]:
    """The model's feature tap names, shallow to deep."""
    return list(model.feature_taps)


class FeatureTaps:
    """Records the named features of every forward pass made inside the `with` block.

        with FeatureTaps(model, ["stage2", "embedding"]) as taps:
            logits = model(x)
        taps.features["stage2"]

    `names` defaults to all taps. Features keep their autograd graph; a later forward pass in the
    same block overwrites them. The hooks are removed on leaving the block.
    """

    def __init__(self, model: nn.Module, names: Iterable[str] | str | None = None) -> None:
        taps: dict[str, str] = model.feature_taps
        names = [names] if isinstance(names, str) else list(taps if names is None else names)
        unknown = [n for n in names if n not in taps]
        if unknown:
            raise ValueError(
                f"{type(model).__name__} has no feature tap {', '.join(map(repr, unknown))}; "
                f"valid taps: {', '.join(taps)}"
            )
        self.model, self.names = model, names
        self.features: dict[str, Tensor] = {}
        self._handles: list = []

    def __enter__(self) -> FeatureTaps:
        self.features = {}
        for name in self.names:
            module = self.model.get_submodule(self.model.feature_taps[name])
            self._handles.append(module.register_forward_hook(self._recorder(name)))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _recorder(self, name: str):
        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            self.features[name] = output

        return hook


def image_channels(input_shape: tuple[int, ...], model: str) -> int:
    """The channel count of [C, H, W] samples; other shapes are refused with a readable message."""
    if len(input_shape) != 3:
        raise ValueError(
            f"model {model!r} takes images of shape [C, H, W]; the data has samples of shape {list(input_shape)}"
        )
    return input_shape[0]
