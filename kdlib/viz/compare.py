"""Many runs side by side: overlaid epoch curves, a study's trials (curves and searched params),
and the parallel-coordinates view of hyperparameters against outcomes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .style import _empty_figure, _small_multiples, color_scale, integer_axis, method_color, plain, scalar_label


def compare_curves_figure(
    curves: dict[str, pd.DataFrame], metric: str, title: str = "", methods: dict[str, str] | None = None
) -> go.Figure:
    """One epoch curve of `metric` per run, overlaid; `curves` maps a run's label to its epoch frame.

    `methods` maps a label to its run's method: each method then keeps its colour (`style.method_color`) and
    the runs of one method differ by their dash."""
    fig, dashes, seen = go.Figure(), ("solid", "dash", "dot", "dashdot", "longdash"), {}
    for label, epochs in curves.items():
        if metric in epochs:
            line = {}
            if methods and label in methods:
                method = methods[label]
                line = {"color": method_color(method), "dash": dashes[seen.get(method, 0) % len(dashes)]}
                seen[method] = seen.get(method, 0) + 1
            fig.add_scatter(x=epochs.index, y=epochs[metric], mode="lines+markers", name=plain(label), line=line)
    if not fig.data:
        return _empty_figure(f"none of these runs has {plain(scalar_label(metric))} yet")
    shown = [i for t in fig.data for i in t.x]
    return fig.update_layout(
        title=plain(title) if title else None,
        xaxis=integer_axis(shown),
        yaxis_title=plain(scalar_label(metric)),
        height=380,
        legend={"orientation": "h", "y": -0.2},
    )


def study_curves_figure(curves: dict[str, pd.DataFrame], metric: str, pruned=(), title: str = "") -> go.Figure:
    """One epoch curve of `metric` per trial of a study (`compare_curves_figure`); pruned trials dashed."""
    fig, pruned = compare_curves_figure(curves, metric, title), {plain(p) for p in pruned}
    return fig.for_each_trace(lambda trace: trace.update(line_dash="dash"), selector=lambda t: t.name in pruned)


TRIAL_MARKERS = {"complete": ("circle", "#636efa"), "pruned": ("x", "#ef553b"), "running": ("circle-open", "#7f7f7f")}


def study_params_figure(trials: pd.DataFrame, params: list[str], title: str = "") -> go.Figure:
    """Each searched param against the trials' values, one panel per param; a pruned trial's value is its metric
    where it stopped. `trials` is `kdlib.views.study_summary`."""
    shown = trials.dropna(subset=["value"]) if "value" in trials else trials
    if shown.empty or not params:
        return _empty_figure("no trial has a value yet")
    fig = _small_multiples(len(params), [plain(p) for p in params])
    for i, param in enumerate(params):
        for state, group in shown.groupby("state", sort=True):
            symbol, color = TRIAL_MARKERS.get(state, ("circle", "#000000"))
            fig.add_scatter(
                x=group[param],
                y=group["value"],
                mode="markers",
                name=state,
                legendgroup=state,
                showlegend=i == 0,
                marker={"symbol": symbol, "color": color, "size": 9},
                customdata=group[["trial", "run_id"]].values,
                hovertemplate="trial %{customdata[0]}<br>%{x}: %{y:.4g}<br>run %{customdata[1]}<extra></extra>",
                row=i // 3 + 1,
                col=i % 3 + 1,
            )
    fig.update_yaxes(title_text=plain(scalar_label(shown.metric.iloc[0])) if "metric" in shown else "value", col=1)
    rows = -(-len(params) // 3)
    return fig.update_layout(
        title=plain(title) if title else None, height=100 + 260 * rows, legend={"orientation": "h", "y": -0.15}
    )


_OUTCOMES = ("test_acc", "test_ece")

_NOT_DIMENSIONS = {"id", "name", "status"}

_ALWAYS = {"method", "student"}

_WHEN_VARYING = {"epochs", "lr", "data", "teacher"}  # the recipe: an axis only when runs differ in it


def _categorical_dimension(values: pd.Series) -> dict:
    labels = sorted(values.fillna("none").astype(str).unique())
    codes = values.fillna("none").astype(str).map({v: i for i, v in enumerate(labels)})
    return {
        "label": plain(scalar_label(values.name)),
        "values": codes.tolist(),
        "tickvals": list(range(len(labels))),
        "ticktext": [plain(v) for v in labels],
    }


def _numeric_dimension(values: pd.Series) -> dict:
    """A numeric axis; runs without the value (e.g. a CE run's temperature) sit on an `n/a` tick below."""
    values = values.astype(float)
    if values.notna().all():
        return {"label": plain(scalar_label(values.name)), "values": values.tolist()}
    low, high = values.min(), values.max()
    missing = low - max(high - low, abs(low), 1.0) * 0.25
    ticks = sorted({float(f"{t:.3g}") for t in np.linspace(low, high, 4 if high > low else 1)})
    return {
        "label": plain(scalar_label(values.name)),
        "values": values.fillna(missing).tolist(),
        "range": [missing, high],
        "tickvals": [missing, *ticks],
        "ticktext": ["n/a", *(f"{t:g}" for t in ticks)],
    }


def parallel_coordinates_figure(summary: pd.DataFrame, color: str = "test_acc", title: str = "") -> go.Figure:
    """Hyperparameters against final test accuracy and calibration error, one line per run.

    `summary` is `kdlib.views.runs_summary`: method and student always appear; other columns appear
    when some run has a value (numeric) or when they differ between runs (text).
    """
    if summary.empty:
        return _empty_figure("no runs to compare")
    dimensions = []
    for column in summary.columns:
        values = summary[column]
        if column in _NOT_DIMENSIONS or column in _OUTCOMES or values.isna().all():
            continue
        if column in _WHEN_VARYING and values.nunique(dropna=False) < 2:
            continue
        if pd.api.types.is_numeric_dtype(values):
            dimensions.append(_numeric_dimension(values))
        elif column in _ALWAYS or values.nunique(dropna=False) > 1:
            dimensions.append(_categorical_dimension(values))
    dimensions += [_numeric_dimension(summary[c]) for c in _OUTCOMES if c in summary]
    line = {}
    if color in summary and summary[color].notna().any():
        values = summary[color].astype(float)
        low, high = values.min(), values.max()
        pad = 0 if high > low else 0.01
        line = {
            "color": values.fillna(low).tolist(),
            "colorscale": color_scale(color),
            "cmin": low - pad,
            "cmax": high + pad,
            "showscale": True,
            "colorbar": {"title": {"text": plain(scalar_label(color))}},
        }
    fig = go.Figure(go.Parcoords(dimensions=dimensions, line=line))
    return fig.update_layout(
        title=plain(title) if title else None, height=420, margin={"l": 80, "r": 60, "t": 80, "b": 40}
    )
