"""Read-side helpers over the store; everything here returns plain frames, arrays or models, and
figures are `kdlib.viz`'s job.

- `runs`: one run for a notebook (`load_run`), summaries of runs and of a sweep's trials, a run's models;
- `samples`: which per-sample values a run offers and their labels, one sample over the epochs, the
  numbers of the per-sample and method views;
- `lessons`: softmax at several temperatures and the methods' closed forms on numbers and arrays.
"""

from __future__ import annotations

from kdlib.store.studies import STUDY_OUTCOMES, best_trial, study_summary
from kdlib.views.lessons import (
    entropy_curve,
    pskd_rescaling,
    pskd_target_true,
    run_logits,
    softmax_table,
    wsl_weight,
)
from kdlib.views.runs import (
    LoadedRun,
    coefficient_at,
    describe_model,
    grid_probabilities,
    load_run,
    load_student,
    load_teacher,
    plane_grid,
    predict_proba,
    route_epochs,
    runs_summary,
    searched_params,
    study_curves,
    teacher_run_id,
    teacher_weights,
)
from kdlib.views.samples import (
    declared_keys,
    domain_confidence,
    has_route,
    head_probabilities,
    method_views,
    regularization_flags,
    rescaling_summary,
    run_values,
    runs_with,
    sample_input,
    sample_probabilities,
    sample_trajectories,
    sample_views,
    search_weights,
    sibling_runs,
    trajectory_keys,
    value_label,
)

__all__ = [
    "LoadedRun",
    "STUDY_OUTCOMES",
    "best_trial",
    "coefficient_at",
    "declared_keys",
    "describe_model",
    "domain_confidence",
    "entropy_curve",
    "grid_probabilities",
    "has_route",
    "head_probabilities",
    "load_run",
    "load_student",
    "load_teacher",
    "method_views",
    "plane_grid",
    "predict_proba",
    "pskd_rescaling",
    "pskd_target_true",
    "regularization_flags",
    "rescaling_summary",
    "route_epochs",
    "run_logits",
    "run_values",
    "runs_summary",
    "runs_with",
    "sample_input",
    "sample_probabilities",
    "sample_trajectories",
    "sample_views",
    "search_weights",
    "searched_params",
    "sibling_runs",
    "softmax_table",
    "study_curves",
    "study_summary",
    "teacher_run_id",
    "teacher_weights",
    "trajectory_keys",
    "value_label",
    "wsl_weight",
]
