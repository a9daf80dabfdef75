"""Figures: store data in, plotly figures out. The app and the widgets only arrange them.

Every builder takes plain frames or arrays (what `RunStore` returns) and returns a
`plotly.graph_objects.Figure`, so tests check the figures' data, not pixels.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

SPLIT_COLORS = {"train": "#636efa", "val": "#ef553b", "test": "#00cc96"}


def training_curves_figure(steps: pd.DataFrame, epochs: pd.DataFrame, title: str = "") -> go.Figure:
    """Loss per logged step and per epoch (left), accuracy per epoch on each split (right).

    `steps` is indexed by global step with a `train.loss` column; `epochs` by epoch, with
    `step`, `train.loss` and `<split>.acc` columns (`RunStore.step_metrics` / `epoch_metrics`).
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    if "train.loss" in steps:
        fig.add_scatter(
            x=steps.index,
            y=steps["train.loss"],
            mode="lines",
            name="train loss (steps)",
            line={"color": SPLIT_COLORS["train"], "width": 1},
            opacity=0.5,
            row=1,
            col=1,
        )
    if "train.loss" in epochs:
        fig.add_scatter(
            x=epochs["step"],
            y=epochs["train.loss"],
            mode="lines+markers",
            name="train loss (epoch mean)",
            line={"color": SPLIT_COLORS["train"]},
            row=1,
            col=1,
        )
    for split, color in SPLIT_COLORS.items():
        if f"{split}.acc" in epochs:
            fig.add_scatter(
                x=epochs.index,
                y=epochs[f"{split}.acc"],
                mode="lines+markers",
                name=f"{split} accuracy",
                line={"color": color},
                row=1,
                col=2,
            )
    fig.update_xaxes(title_text="step", row=1, col=1)
    fig.update_xaxes(title_text="epoch", row=1, col=2)
    fig.update_yaxes(range=[0, 1], row=1, col=2)
    return fig.update_layout(
        title=title or None, height=360, margin={"t": 60, "b": 40}, legend={"orientation": "h", "y": -0.25}
    )


def _small_multiples(n: int, titles: list[str], cols: int = 3) -> go.Figure:
    cols = max(min(cols, n), 1)
    rows = max(-(-n // cols), 1)
    return make_subplots(
        rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.08, vertical_spacing=min(0.2, 0.6 / rows)
    )


def _empty_figure(message: str, height: int = 200) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig.update_layout(height=height)


def schedule_figure(curves: dict[str, list[float]], title: str = "") -> go.Figure:
    """Each schedulable coefficient's value at every epoch, one small panel per coefficient."""
    if not curves:
        return _empty_figure("this method has no coefficients that follow a schedule")
    fig = _small_multiples(len(curves), list(curves), cols=len(curves))
    for i, (name, values) in enumerate(curves.items()):
        fig.add_scatter(
            x=list(range(len(values))),
            y=list(values),
            mode="lines+markers",
            name=name,
            line={"shape": "hv" if len(set(values)) < len(values) / 2 else "linear"},
            marker={"size": 4},
            row=1,
            col=i + 1,
        )
        fig.update_xaxes(title_text="epoch", row=1, col=i + 1)
    return fig.update_layout(title=title or None, height=230, showlegend=False, margin={"t": 40, "b": 40, "l": 40})


def method_scalar_columns(epochs: pd.DataFrame) -> list[str]:
    """The epoch scalars a method adds: its coefficients (`temperature`, `w_kd`: no dot) and loss terms
    (`train.loss_kd`); not the common ones (lr, loss, accuracy, NLL, ECE) nor probes (`route_kl.0003`)."""
    return [
        c
        for c in epochs.columns
        if c not in ("step", "lr", "train.loss")
        and ("." not in c or (c.startswith("train.") and not c.endswith((".acc", ".nll", ".ece"))))
    ]


def scalars_figure(epochs: pd.DataFrame, columns: list[str] | None = None, title: str = "") -> go.Figure:
    """Small multiples of epoch scalars (default: the method's own, e.g. temperature, w_kd, train.loss_kd)."""
    columns = method_scalar_columns(epochs) if columns is None else [c for c in columns if c in epochs]
    if not columns:
        return _empty_figure("no method scalars yet")
    fig = _small_multiples(len(columns), columns)
    for i, column in enumerate(columns):
        fig.add_scatter(
            x=epochs.index, y=epochs[column], mode="lines+markers", name=column, row=i // 3 + 1, col=i % 3 + 1
        )
    rows = -(-len(columns) // 3)
    return fig.update_layout(title=title or None, height=80 + 200 * rows, showlegend=False, margin={"t": 50, "b": 30})


def compare_curves_figure(curves: dict[str, pd.DataFrame], metric: str, title: str = "") -> go.Figure:
    """One epoch curve of `metric` per run, overlaid; `curves` maps a run's label to its epoch frame."""
    fig = go.Figure()
    for label, epochs in curves.items():
        if metric in epochs:
            fig.add_scatter(x=epochs.index, y=epochs[metric], mode="lines+markers", name=label)
    if not fig.data:
        return _empty_figure(f"none of these runs has {metric!r} yet")
    return fig.update_layout(
        title=title or None, xaxis_title="epoch", yaxis_title=metric, height=380, legend={"orientation": "h", "y": -0.2}
    )


_OUTCOMES = ("test_acc", "test_ece")
_NOT_DIMENSIONS = {"id", "name", "status"}
_ALWAYS = {"method", "student"}
_WHEN_VARYING = {"epochs", "lr", "data", "teacher"}  # the recipe: an axis only when runs differ in it


def _categorical_dimension(values: pd.Series) -> dict:
    labels = sorted(values.fillna("none").astype(str).unique())
    codes = values.fillna("none").astype(str).map({v: i for i, v in enumerate(labels)})
    return {"label": values.name, "values": codes.tolist(), "tickvals": list(range(len(labels))), "ticktext": labels}


def _numeric_dimension(values: pd.Series) -> dict:
    """A numeric axis; runs without the value (e.g. a CE run's temperature) sit on an `n/a` tick below."""
    values = values.astype(float)
    if values.notna().all():
        return {"label": values.name, "values": values.tolist()}
    low, high = values.min(), values.max()
    missing = low - max(high - low, abs(low), 1.0) * 0.25
    ticks = sorted({float(f"{t:.3g}") for t in np.linspace(low, high, 4 if high > low else 1)})
    return {
        "label": values.name,
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
            "colorscale": "Viridis",
            "cmin": low - pad,
            "cmax": high + pad,
            "showscale": True,
            "colorbar": {"title": color},
        }
    fig = go.Figure(go.Parcoords(dimensions=dimensions, line=line))
    return fig.update_layout(title=title or None, height=420, margin={"l": 80, "r": 60, "t": 80, "b": 40})


CLASS_COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]
_TWO_CLASS_SCALE = [[0.0, CLASS_COLORS[0]], [0.5, "#f7f7f7"], [1.0, CLASS_COLORS[1]]]


def decision_boundary_figure(
    xs: np.ndarray,
    ys: np.ndarray,
    grid_probs: np.ndarray,
    points: np.ndarray,
    point_values: np.ndarray,
    color_by: str = "label",
    title: str = "",
    show_scale: bool = True,
) -> go.Figure:
    """A model's predicted regions over a 2-D grid, with points on top.

    `grid_probs` is [len(ys), len(xs), K] (`kdlib.views.grid_probabilities`). Two classes: the
    background is p(class 1) with the 0.5 contour; more: the predicted class. `point_values` are
    labels (`color_by="label"`) or probabilities in [0, 1] (`color_by="probability"`, e.g. the
    teacher's soft label p(class 1) at the run's temperature). `show_scale=False` hides the colour
    bar, for a panel beside another with the same scale.
    """
    num_classes = grid_probs.shape[-1]
    fig = go.Figure()
    if num_classes == 2:
        fig.add_heatmap(
            x=xs,
            y=ys,
            z=grid_probs[..., 1],
            zmin=0,
            zmax=1,
            colorscale=_TWO_CLASS_SCALE,
            opacity=0.55,
            colorbar={"title": "p(class 1)", "len": 0.8, "thickness": 12},
            showscale=show_scale,
            name="p(class 1)",
            hovertemplate="p(class 1)=%{z:.2f}<extra></extra>",
        )
        fig.add_contour(
            x=xs,
            y=ys,
            z=grid_probs[..., 1],
            contours={"start": 0.5, "end": 0.5, "coloring": "lines"},
            line={"color": "black", "width": 2},
            showscale=False,
            name="p = 0.5",
            hoverinfo="skip",
        )
    else:
        steps = [
            [i / num_classes + e / num_classes, CLASS_COLORS[i % len(CLASS_COLORS)]]
            for i in range(num_classes)
            for e in (0, 1)
        ]
        fig.add_heatmap(
            x=xs,
            y=ys,
            z=grid_probs.argmax(-1),
            zmin=-0.5,
            zmax=num_classes - 0.5,
            colorscale=steps,
            opacity=0.45,
            showscale=False,
            name="predicted class",
            hovertemplate="class %{z}<extra></extra>",
        )
    points, point_values = np.asarray(points), np.asarray(point_values)
    if color_by == "label":
        for k in np.unique(point_values.astype(int)):
            rows = point_values.astype(int) == k
            fig.add_scatter(
                x=points[rows, 0],
                y=points[rows, 1],
                mode="markers",
                name=f"label {k}",
                marker={
                    "color": CLASS_COLORS[k % len(CLASS_COLORS)],
                    "size": 6,
                    "line": {"width": 0.5, "color": "black"},
                },
            )
    else:
        fig.add_scatter(
            x=points[:, 0],
            y=points[:, 1],
            mode="markers",
            name="points",
            marker={
                "color": point_values,
                "cmin": 0,
                "cmax": 1,
                "size": 6,
                "line": {"width": 0.5, "color": "black"},
                "colorscale": _TWO_CLASS_SCALE if num_classes == 2 else "Viridis",
                "showscale": num_classes != 2,
            },
            hovertemplate="p=%{marker.color:.2f}<extra></extra>",
        )
    # equal scales on both axes; the plot area shrinks to the data instead of the axes growing past it
    fig.update_yaxes(scaleanchor="x", scaleratio=1, range=[float(ys[0]), float(ys[-1])], constrain="domain")
    fig.update_xaxes(range=[float(xs[0]), float(xs[-1])], constrain="domain")
    return fig.update_layout(
        title=title or None,
        height=380,
        margin={"t": 50, "b": 20, "l": 10, "r": 10},
        legend={"orientation": "h", "y": -0.08},
    )


def softmax_temperature_figure(table: pd.DataFrame, title: str = "") -> go.Figure:
    """softmax(z / T) per class, one group of bars per temperature (`kdlib.views.softmax_table`)."""
    fig = go.Figure()
    for temperature, rows in table.groupby("temperature", sort=True):
        fig.add_bar(x=rows["class"].astype(str), y=rows.probability, name=f"T = {temperature:g}")
    return fig.update_layout(
        title=title or None,
        barmode="group",
        xaxis_title="class",
        yaxis={"title": "probability", "range": [0, 1]},
        height=360,
        legend={"orientation": "h", "y": 1.12},
    )


def entropy_figure(curve: pd.DataFrame, temperature: float | None = None, num_classes: int | None = None) -> go.Figure:
    """Entropy of softmax(z / T) against T (`kdlib.views.entropy_curve`), the chosen T marked."""
    fig = go.Figure(go.Scatter(x=curve.temperature, y=curve.entropy, mode="lines", name="entropy"))
    if num_classes:
        fig.add_hline(y=float(np.log(num_classes)), line_dash="dash", annotation_text="ln K: uniform")
    if temperature is not None:
        at = float(np.interp(temperature, curve.temperature, curve.entropy))
        fig.add_scatter(x=[temperature], y=[at], mode="markers", marker={"size": 12}, name=f"T = {temperature:g}")
    ticks = [t for t in (0.25, 0.5, 1, 2, 4, 8, 16, 32, 64) if curve.temperature.min() <= t <= curve.temperature.max()]
    return fig.update_layout(
        title="entropy of softmax(z / T)",
        xaxis={"title": "temperature T", "type": "log", "tickvals": ticks, "ticktext": [f"{t:g}" for t in ticks]},
        yaxis_title="entropy (nats)",
        height=300,
        showlegend=False,
        margin={"t": 50},
    )
