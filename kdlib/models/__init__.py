"""Models by name, found in this package's modules on first use. Each registry entry has `Params` (its config section), is built as
`Model(params, input_shape, num_classes)`, returns logits [N, num_classes] and names its
intermediate features in `feature_taps` (read them with `FeatureTaps`)."""

from __future__ import annotations

from kdlib.models.base import MODELS, FeatureTaps, build_model, feature_names

__all__ = ["MODELS", "FeatureTaps", "build_model", "feature_names"]
