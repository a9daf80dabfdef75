"""2-D data: a model's decision regions over a grid, with the points (labels or soft labels) on top."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from .style import CLASS_COLORS, plain

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
        title=plain(title) if title else None,
        height=380,
        margin={"t": 50, "b": 20, "l": 10, "r": 10},
        legend={"orientation": "h", "y": -0.08},
    )
