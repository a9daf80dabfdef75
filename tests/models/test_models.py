"""The model zoo: shapes, feature taps, param validation, and RepDistiller's parameter counts."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from kdlib.models import MODELS, FeatureTaps, build_model, feature_names

NUM_CLASSES = 7
SIGNAL, IMAGE = (40,), (3, 32, 32)

# Every registered name with its default params, plus the variants worth a run of their own.
CASES = [(name, {}) for name in MODELS.names()] + [
    ("mlp", {"hidden": []}),
    ("mlp", {"hidden": [16, 8], "activation": "gelu", "dropout": 0.5}),
    ("cnn1d", {"pool": "flatten", "stride": 2}),
    ("wrn", {"depth": 10, "widen_factor": 1, "dropout": 0.3}),
    ("torchvision", {"arch": "mobilenet_v3_small"}),
]


def _input_shape(name: str) -> tuple[int, ...]:
    return SIGNAL if name in ("mlp", "cnn1d") else IMAGE


def _build(name: str, input_shape: tuple[int, ...] | None = None, **params) -> nn.Module:
    spec = MODELS.get(name).Params(**params)
    return build_model(spec, input_shape or _input_shape(name), NUM_CLASSES)


def test_params_default_to_their_registry_name():
    for name, entry in MODELS.items():
        assert entry.Params().name == name


@pytest.mark.parametrize(("name", "params"), CASES, ids=lambda v: v if isinstance(v, str) else str(v or ""))
def test_forward_and_feature_taps(name, params):
    torch.manual_seed(0)
    model = _build(name, **params).train()
    x = torch.randn(2, *_input_shape(name))
    names = feature_names(model)
    assert names[-1] == "embedding"
    with FeatureTaps(model, names) as taps:
        logits = model(x)
    assert logits.shape == (2, NUM_CLASSES)
    assert list(taps.features) == names
    for feature in taps.features.values():
        assert isinstance(feature, torch.Tensor) and feature.shape[0] == 2
    assert taps.features["embedding"].ndim == 2
    # Features keep their graph, and nothing in-place breaks the backward pass through them.
    (logits.sum() + sum(f.sum() for f in taps.features.values())).backward()


def test_signals_with_channels_and_small_gray_images():
    assert _build("cnn1d", (2, 40))(torch.randn(3, 2, 40)).shape == (3, NUM_CLASSES)
    assert _build("mlp", (1, 8, 8))(torch.randn(3, 1, 8, 8)).shape == (3, NUM_CLASSES)
    for name in ("cnn2d", "resnet8", "wrn"):
        assert _build(name, (1, 8, 8))(torch.randn(3, 1, 8, 8)).shape == (3, NUM_CLASSES)
    assert _build("torchvision", (1, 32, 32))(torch.randn(3, 1, 32, 32)).shape == (3, NUM_CLASSES)


def test_image_models_refuse_flat_inputs():
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        _build("resnet20", (64,))


def test_torchvision_resnet_has_stage_taps():
    model = _build("torchvision", IMAGE, arch="resnet18")
    assert feature_names(model) == ["stage1", "stage2", "stage3", "stage4", "embedding"]
    with FeatureTaps(model, ["stage4", "embedding"]) as taps:
        model(torch.randn(2, *IMAGE))
    assert taps.features["stage4"].shape[:2] == (2, 512)
    assert taps.features["embedding"].shape == (2, 512)


def test_feature_taps_remove_their_hooks():
    model = _build("resnet8")
    with FeatureTaps(model) as taps:
        model(torch.randn(2, *IMAGE))
    assert all(not m._forward_hooks for m in model.modules())
    before = taps.features["stage3"]
    model(torch.randn(2, *IMAGE))
    assert taps.features["stage3"] is before


def test_unknown_tap_lists_the_valid_ones():
    with pytest.raises(ValueError, match="stage9.*valid taps: stem, stage1, stage2, stage3, embedding"):
        FeatureTaps(_build("resnet8"), ["stage1", "stage9"])


@pytest.mark.parametrize(
    ("name", "params", "field", "message"),
    [
        ("wrn", {"depth": 15}, "depth", "6n"),
        ("torchvision", {"arch": "resnt18"}, "arch", "did you mean 'resnet18'"),
        ("torchvision", {"arch": "squeezenet1_0"}, "arch", "conv layer"),
        ("torchvision", {"arch": "resnet18", "weights": "IMAGENET"}, "weights", "IMAGENET1K_V1"),
        ("cnn2d", {"chanels": [8]}, "chanels", "Extra inputs"),
    ],
)
def test_bad_params_name_the_field(name, params, field, message):
    with pytest.raises(ValidationError) as error:
        MODELS.get(name).Params(**params)
    assert error.value.errors()[0]["loc"] == (field,)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("name", "millions"),
    [
        # RepDistiller's counts (CRD paper, CIFAR-100): resnet20 0.28M, resnet8x4 1.23M, resnet32x4 7.43M, wrn_40_2 2.26M.
        ("resnet20", 0.28),
        ("resnet8x4", 1.23),
        ("resnet32x4", 7.43),
        ("wrn", 2.26),
    ],
)
def test_parameter_counts_match_repdistiller(name, millions):
    params = {"depth": 40} if name == "wrn" else {}
    model = build_model(MODELS.get(name).Params(**params), IMAGE, 100)
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(millions, rel=0.05)
