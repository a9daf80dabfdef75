"""Figures: store data in, plotly figures out. The app and the widgets only arrange them.

Every builder takes plain frames or arrays (what `RunStore` returns) and returns a
`plotly.graph_objects.Figure`, so tests check the figures' data, not pixels.

The builders live in one module per area; this package re-exports them all, so
`from kdlib import viz; viz.reliability_figure(...)` works whichever module holds a figure:

- `style`:       one colour per quantity, yes/no colours, labels of stored names, epoch and log axes,
                 user text made plain, the empty figure and the small-multiples grid
- `curves`:      one run over time (training curves, schedules, method scalars, DFA, LSSKD)
- `compare`:     runs side by side (overlaid curves, studies, parallel coordinates)
- `calibration`: reliability diagram, source/target confidence
- `samples`:     per-sample scatter views, one sample's trajectory, input and top classes
- `route`:       the teacher's route and RCO's anchors
- `boundaries`:  decision regions over 2-D data
- `lessons`:     temperature, entropy, PS-KD and WSL closed forms
"""

from __future__ import annotations

from .boundaries import decision_boundary_figure
from .calibration import domain_confidence_figure, reliability_figure
from .compare import (
    TRIAL_MARKERS,
    compare_curves_figure,
    parallel_coordinates_figure,
    study_curves_figure,
    study_params_figure,
)
from .curves import (
    head_accuracy_figure,
    method_scalar_columns,
    scalars_figure,
    schedule_figure,
    search_weights_figure,
    training_curves_figure,
)
from .lessons import entropy_figure, pskd_rescaling_curve_figure, softmax_temperature_figure, wsl_weight_map_figure
from .route import anchor_schedule_figure, route_distance_figure, route_map_figure, route_profile_figure
from .samples import (
    bias_variance_figure,
    per_sample_scatter_figure,
    rescaling_figure,
    sample_image_figure,
    sample_input_figure,
    signal_figure,
    soft_label_weights_figure,
    top_classes_figure,
    trajectory_figure,
)
from .style import (
    BOOLEAN_COLORS,
    CLASS_COLORS,
    METHOD_COLORS,
    QUANTITY_COLORS,
    QUANTITY_SCALES,
    ROLE_COLORS,
    SPLIT_COLORS,
    method_color,
    plain,
    scalar_label,
)

__all__ = [
    "BOOLEAN_COLORS",
    "CLASS_COLORS",
    "METHOD_COLORS",
    "QUANTITY_COLORS",
    "QUANTITY_SCALES",
    "ROLE_COLORS",
    "SPLIT_COLORS",
    "TRIAL_MARKERS",
    "anchor_schedule_figure",
    "bias_variance_figure",
    "compare_curves_figure",
    "decision_boundary_figure",
    "domain_confidence_figure",
    "entropy_figure",
    "head_accuracy_figure",
    "method_color",
    "method_scalar_columns",
    "parallel_coordinates_figure",
    "per_sample_scatter_figure",
    "plain",
    "pskd_rescaling_curve_figure",
    "reliability_figure",
    "rescaling_figure",
    "route_distance_figure",
    "route_map_figure",
    "route_profile_figure",
    "scalar_label",
    "sample_image_figure",
    "sample_input_figure",
    "scalars_figure",
    "schedule_figure",
    "search_weights_figure",
    "signal_figure",
    "soft_label_weights_figure",
    "softmax_temperature_figure",
    "study_curves_figure",
    "study_params_figure",
    "top_classes_figure",
    "training_curves_figure",
    "trajectory_figure",
    "wsl_weight_map_figure",
]
