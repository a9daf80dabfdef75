"""The lessons' closed forms: softmax at several temperatures and its entropy, PS-KD's gradient
rescaling curve and WSL's weight map."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .style import BOOLEAN_COLORS, QUANTITY_COLORS, QUANTITY_SCALES, SELECTED_COLOR, plain, temperature_color


def softmax_temperature_figure(table: pd.DataFrame, title: str = "") -> go.Figure:
    """softmax(z / T) per class, one group of bars per temperature (`kdlib.views.softmax_table`)."""
    fig = go.Figure()
    for temperature, rows in table.groupby("temperature", sort=True):
        fig.add_bar(
            x=rows["class"].astype(str),
            y=rows.probability,
            name=f"T = {temperature:g}",
            marker_color=temperature_color(temperature),  # as the entropy chart marks this T
        )
    return fig.update_layout(
        title=plain(title) if title else None,
        barmode="group",
        xaxis_title="class",
        yaxis={"title": "probability", "range": [0, 1]},
        height=360,
        legend={"orientation": "h", "y": 1.12},
    )


def entropy_figure(curve: pd.DataFrame, temperature: float | None = None, num_classes: int | None = None) -> go.Figure:
    """Entropy of softmax(z / T) against T (`kdlib.views.entropy_curve`), the chosen T marked."""
    fig = go.Figure(
        go.Scatter(x=curve.temperature, y=curve.entropy, mode="lines", name="entropy", line={"color": "#555555"})
    )
    if num_classes:
        fig.add_hline(y=float(np.log(num_classes)), line_dash="dash", annotation_text="ln K: uniform")
    if temperature is not None:
        at = float(np.interp(temperature, curve.temperature, curve.entropy))
        marker = {"size": 13, "color": temperature_color(temperature), "line": {"width": 1, "color": "black"}}
        fig.add_scatter(x=[temperature], y=[at], mode="markers", marker=marker, name=f"T = {temperature:g}")
    ticks = [t for t in (0.25, 0.5, 1, 2, 4, 8, 16, 32, 64) if curve.temperature.min() <= t <= curve.temperature.max()]
    return fig.update_layout(
        title="entropy of softmax(z / T)",
        xaxis={"title": "temperature T", "type": "log", "tickvals": ticks, "ticktext": [f"{t:g}" for t in ticks]},
        yaxis_title="entropy (nats)",
        height=300,
        showlegend=False,
        margin={"t": 50},
    )


def pskd_rescaling_curve_figure(
    p_true: np.ndarray, curves: dict[str, np.ndarray], point: tuple[float, float] | None = None
) -> go.Figure:
    """PS-KD's w_gt against p_g (the prediction now), one curve per setting; `point` is the sliders' sample."""
    fig, dashes = go.Figure(), ("solid", "dash", "dot", "dashdot")
    for i, (name, values) in enumerate(curves.items()):  # one quantity (w_gt): its colour, a dash per setting
        line = {"width": 3 if i == 0 else 1.5, "color": QUANTITY_COLORS["gradient ratio"], "dash": dashes[i % 4]}
        fig.add_scatter(x=p_true, y=values, mode="lines", name=plain(name), line=line)
    if point is not None:
        fig.add_scatter(
            x=[point[0]],
            y=[point[1]],
            mode="markers",
            name="the sliders' sample",
            marker={"size": 14, "color": SELECTED_COLOR},
        )
    fig.add_hline(y=1, line_dash="dot", line_color="gray", annotation_text="plain cross-entropy")
    fig.add_hline(  # at the left: the sliders' sample often sits at the right end of this line
        y=0, line_dash="dash", line_color="gray", annotation_text="no gradient", annotation_position="top left"
    )
    return fig.update_layout(
        title="Gradient on the true class, as a share of cross-entropy's",
        xaxis_title="p_g: the model's probability of the true class now",
        yaxis_title="w_gt",
        yaxis_range=[-1.5, 1.2],
        xaxis_range=[0, 1],
        height=380,
        legend={"orientation": "h", "y": -0.25},
    )


def wsl_weight_map_figure(
    p_student: np.ndarray, p_teacher: np.ndarray, weights: np.ndarray, point: tuple[float, float] | None = None
) -> go.Figure:
    """WSL's weight over the student's (x) and the teacher's (y) true-class probability.

    `weights` is [len(p_teacher), len(p_student)]. Below the diagonal the teacher is less sure of the
    true class than the student: the regularization samples, weighted below 1 - 1/e.
    """
    fig = go.Figure(
        go.Heatmap(
            x=p_student,
            y=p_teacher,
            z=weights,
            zmin=0,
            zmax=1,
            colorscale=QUANTITY_SCALES["weight"],  # as wherever WSL's weight colours points
            colorbar={"title": {"text": "weight w"}},
            hovertemplate="p_s,y %{x:.2f}<br>p_t,y %{y:.2f}<br>w %{z:.3f}<extra></extra>",
        )
    )
    fig.add_scatter(
        x=[0, 1], y=[0, 1], mode="lines", name="p_t,y = p_s,y (w = 1 - 1/e)", line={"dash": "dot", "color": "white"}
    )
    fig.add_annotation(  # in the colour a regularization sample has on every scatter
        x=0.75, y=0.15, text="<b>regularization samples</b>", showarrow=False, font={"color": BOOLEAN_COLORS[True]}
    )
    if point is not None:
        fig.add_scatter(
            x=[point[0]],
            y=[point[1]],
            mode="markers",
            name="the sliders' sample",
            marker={"size": 16, "color": "rgba(255,255,255,0.45)", "line": {"width": 3, "color": SELECTED_COLOR}},
        )
    fig.update_yaxes(range=[0, 1])
    fig.update_xaxes(range=[0, 1])
    return fig.update_layout(
        title="WSL's weight w = 1 - exp(-CE_student / CE_teacher)",
        xaxis_title="p_s,y: the student's probability of the true class",
        yaxis_title="p_t,y: the teacher's",
        height=420,
        showlegend=False,
    )
